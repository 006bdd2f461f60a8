import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { OutboundMessage } from '../../src/hub/outbound.ts';

function message(payloadLength: number): OutboundMessage {
  // `{"p":"xxx…"}` is 8 bytes plus the padding.
  return new OutboundMessage(JSON.stringify({ p: 'x'.repeat(payloadLength - 8) }), 'notification', 2, 'id');
}

describe('OutboundMessage.wsFrame (RFC 6455 §5.2)', () => {
  test('uses the 7-bit, 16-bit and 64-bit length forms at their edges', () => {
    const cases: Array<[number, number[]]> = [
      [125, [0x81, 125]],
      [126, [0x81, 126, 0, 126]],
      [65535, [0x81, 126, 0xff, 0xff]],
      [65536, [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]],
    ];
    for (const [length, header] of cases) {
      const frame = message(length).wsFrame;
      assert.deepEqual([...frame.subarray(0, header.length)], header, `length ${length}`);
      assert.equal(frame.length, header.length + length);
      assert.equal(frame.subarray(header.length).toString(), message(length).json);
    }
  });

  test('is built once and shared, with UTF-8 lengths', () => {
    const shared = new OutboundMessage('{"t":"héllo"}', 'notification', 2);
    assert.equal(shared.wsFrame, shared.wsFrame);
    assert.equal(shared.wsFrame[1], Buffer.byteLength('{"t":"héllo"}'));
    assert.equal(shared.byteLength, 14);
  });

  test('the SSE frame carries the id and one data line', () => {
    const sse = new OutboundMessage('{"a":"x\\ny"}', 'notification', 2, 'abc').sseFrame.toString();
    assert.equal(sse, 'id: abc\nevent: notification\ndata: {"a":"x\\ny"}\n\n');
  });
});
