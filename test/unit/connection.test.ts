/**
 * Unit tests of the per-connection outbound path (src/hub/connection.ts):
 * straight-through writes, the priority backlog (SPEC §7 "Priority"), the
 * slow-consumer cap (SPEC §4, WEBSOCKET_MAX_BUFFERED_BYTES → 4008), end()
 * idempotence and the replay hold (SPEC §7 offline queue / resume).
 *
 * The transport is a fake whose congestion (`needsDrain`) and socket buffer
 * (`bufferedBytes`) the tests control.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Identity } from '../../src/auth/jwt.ts';
import { Connection, type CloseReason, type ConnectionOwner, type Transport } from '../../src/hub/connection.ts';
import { OutboundMessage, PRIORITY_LANE, type Priority } from '../../src/hub/outbound.ts';

class FakeTransport implements Transport {
  readonly kind = 'ws' as const;
  /** What reached the socket, in order (message names). */
  readonly written: string[] = [];
  readonly ends: CloseReason[] = [];
  pings = 0;
  /** Socket pushing back: writes after this go to the backlog. */
  congested = false;
  /** Bytes the kernel has not taken yet; every write adds to it unless `drainsInstantly`. */
  buffered = 0;
  drainsInstantly = true;
  /** When set, the transport becomes congested after this many more writes. */
  congestAfterWrites: number | null = null;

  write(message: OutboundMessage): void {
    this.written.push(nameOf(message));
    if (!this.drainsInstantly) this.buffered += message.byteLength;
    if (this.congestAfterWrites !== null && --this.congestAfterWrites <= 0) {
      this.congested = true;
      this.congestAfterWrites = null;
    }
  }

  bufferedBytes(): number {
    return this.buffered;
  }

  needsDrain(): boolean {
    return this.congested;
  }

  ping(): void {
    this.pings++;
  }

  end(reason: CloseReason): void {
    this.ends.push(reason);
  }
}

class FakeOwner implements ConnectionOwner {
  readonly ended: Array<{ connection: Connection; reason: CloseReason }> = [];

  connectionEnded(connection: Connection, reason: CloseReason): void {
    this.ended.push({ connection, reason });
  }
}

const IDENTITY: Identity = {
  userId: 'alice',
  tenantId: 'default',
  roles: [],
  permittedChannels: null,
  expiresAtMs: Date.now() + 600_000,
};

/** A message whose JSON is `{"n":"<name>"}`, in the lane of `priority`. */
function msg(name: string, priority: Priority = 'Normal'): OutboundMessage {
  return new OutboundMessage(JSON.stringify({ n: name }), 'notification', PRIORITY_LANE[priority], name);
}

/** A message of exactly `bytes` UTF-8 bytes of JSON (a JSON string literal). */
function sized(name: string, bytes: number, priority: Priority = 'Normal'): OutboundMessage {
  assert.ok(bytes >= name.length + 3, `${name} needs at least ${name.length + 3} bytes`);
  const json = `"${name}:${'x'.repeat(bytes - name.length - 3)}"`;
  const message = new OutboundMessage(json, 'notification', PRIORITY_LANE[priority], name);
  assert.equal(message.byteLength, bytes);
  return message;
}

function nameOf(message: OutboundMessage): string {
  return message.id ?? message.json;
}

function setup(maxBufferedBytes = 1_048_576) {
  const transport = new FakeTransport();
  const owner = new FakeOwner();
  const connection = new Connection('c-1', IDENTITY, transport, owner, maxBufferedBytes);
  return { transport, owner, connection };
}

describe('Connection outbound path (src/hub/connection.ts)', () => {
  test('writes messages straight through, in order, while the socket keeps up', () => {
    const { transport, connection } = setup();
    assert.equal(connection.deliver(msg('a', 'Low')), true);
    assert.equal(connection.deliver(msg('b', 'Critical')), true);
    assert.equal(connection.deliver(msg('c', 'Normal')), true);
    // No backlog: arrival order, priorities play no role.
    assert.deepEqual(transport.written, ['a', 'b', 'c']);
    assert.equal(connection.congested, false);
  });

  test('queues messages while congested and flushes them Critical, High, Normal, Low, FIFO within a lane (SPEC §7)', () => {
    const { transport, connection } = setup();
    transport.congested = true;
    const order: Array<[string, Priority]> = [
      ['low-1', 'Low'],
      ['normal-1', 'Normal'],
      ['critical-1', 'Critical'],
      ['high-1', 'High'],
      ['normal-2', 'Normal'],
      ['low-2', 'Low'],
      ['critical-2', 'Critical'],
      ['high-2', 'High'],
    ];
    for (const [name, priority] of order) assert.equal(connection.deliver(msg(name, priority)), true);
    assert.equal(transport.written.length, 0);
    assert.equal(connection.congested, true);

    transport.congested = false;
    connection.flush();
    assert.deepEqual(transport.written, [
      'critical-1',
      'critical-2',
      'high-1',
      'high-2',
      'normal-1',
      'normal-2',
      'low-1',
      'low-2',
    ]);
    assert.equal(connection.congested, false);
  });

  test('keeps queueing behind a non-empty backlog even when the socket no longer asks for drain', () => {
    const { transport, connection } = setup();
    transport.congested = true;
    connection.deliver(msg('normal-1', 'Normal'));
    transport.congested = false;
    // The backlog is non-empty: a new message must not jump straight to the socket
    // (that would overtake normal-1 by accident rather than by priority)...
    connection.deliver(msg('low-1', 'Low'));
    connection.deliver(msg('critical-1', 'Critical'));
    assert.equal(transport.written.length, 0);
    // ...and once flushed, Critical goes ahead of Normal, which goes ahead of Low.
    connection.flush();
    assert.deepEqual(transport.written, ['critical-1', 'normal-1', 'low-1']);
    // Backlog empty again: straight through.
    connection.deliver(msg('normal-2'));
    assert.deepEqual(transport.written, ['critical-1', 'normal-1', 'low-1', 'normal-2']);
  });

  test('stops flushing when the socket pushes back and resumes on the next drain', () => {
    const { transport, connection } = setup();
    transport.congested = true;
    for (const name of ['n1', 'n2', 'n3', 'n4']) connection.deliver(msg(name));
    connection.deliver(msg('h1', 'High'));
    transport.congested = false;
    transport.congestAfterWrites = 2;
    connection.flush();
    assert.deepEqual(transport.written, ['h1', 'n1']);
    assert.equal(connection.congested, true);
    // A message arriving now waits behind the backlog, in its lane.
    connection.deliver(msg('c1', 'Critical'));
    transport.congested = false;
    connection.flush();
    assert.deepEqual(transport.written, ['h1', 'n1', 'c1', 'n2', 'n3', 'n4']);
    assert.equal(connection.congested, false);
  });

  test('allows socket buffer plus backlog exactly at WEBSOCKET_MAX_BUFFERED_BYTES and closes one byte over as slow_consumer, once', () => {
    const { transport, owner, connection } = setup(1000);
    transport.drainsInstantly = false; // every written byte stays in the socket buffer
    assert.equal(connection.deliver(sized('w1', 400)), true);
    assert.equal(transport.buffered, 400);
    transport.congested = true;
    assert.equal(connection.deliver(sized('q1', 350)), true);
    assert.equal(connection.deliver(sized('q2', 250)), true); // 400 buffered + 600 backlog = 1000: at the cap
    assert.equal(connection.ended, false);
    assert.equal(owner.ended.length, 0);
    assert.equal(transport.ends.length, 0);

    assert.equal(connection.deliver(sized('q3', 5)), false); // 1005 > 1000
    assert.equal(connection.ended, true);
    assert.deepEqual(transport.ends, ['slow_consumer']);
    assert.equal(owner.ended.length, 1);
    assert.equal(owner.ended[0]!.reason, 'slow_consumer');
    assert.equal(owner.ended[0]!.connection, connection);

    // Nothing more is written or reported, whatever happens next.
    transport.congested = false;
    connection.flush();
    assert.equal(connection.deliver(msg('late')), false);
    connection.end('idle');
    connection.transportClosed();
    assert.deepEqual(transport.written, ['w1']);
    assert.deepEqual(transport.ends, ['slow_consumer']);
    assert.equal(owner.ended.length, 1);
  });

  test('counts a single byte over the cap in the socket buffer alone as a slow consumer', () => {
    const { transport, owner, connection } = setup(1000);
    transport.drainsInstantly = false;
    assert.equal(connection.deliver(sized('w1', 999)), true);
    assert.equal(connection.deliver(sized('w2', 5)), false); // written, then 1004 buffered > 1000
    assert.deepEqual(transport.written, ['w1', 'w2']);
    assert.deepEqual(owner.ended.map((e) => e.reason), ['slow_consumer']);
  });

  test('is not a slow consumer while the buffer drains, however much passes through', () => {
    const { transport, owner, connection } = setup(1000);
    for (let i = 0; i < 100; i++) assert.equal(connection.deliver(sized(`m${i}`, 900)), true);
    assert.equal(transport.written.length, 100);
    assert.equal(owner.ended.length, 0);
  });

  test('end() is idempotent: the transport is ended once and the owner hears once', () => {
    const { transport, owner, connection } = setup();
    connection.end('idle');
    connection.end('idle');
    connection.end('shutdown');
    connection.transportClosed('client');
    assert.deepEqual(transport.ends, ['idle']);
    assert.deepEqual(owner.ended.map((e) => e.reason), ['idle']);
    assert.equal(connection.ended, true);
    assert.equal(connection.deliver(msg('x')), false);
    assert.equal(connection.writeReplayed(msg('y')), false);
    connection.ping();
    assert.equal(transport.pings, 0);
    assert.equal(transport.written.length, 0);
  });

  test('transportClosed() reports once with its reason and does not end the transport again', () => {
    const { transport, owner, connection } = setup();
    connection.transportClosed('protocol_error');
    connection.transportClosed('client');
    connection.end('idle');
    assert.equal(transport.ends.length, 0);
    assert.deepEqual(owner.ended.map((e) => e.reason), ['protocol_error']);
  });

  test('drops the backlog on end: a later flush writes nothing', () => {
    const { transport, connection } = setup();
    transport.congested = true;
    connection.deliver(msg('a'));
    connection.deliver(msg('b'));
    connection.end('shutdown');
    transport.congested = false;
    connection.flush();
    assert.equal(transport.written.length, 0);
  });

  test('writes replayed messages first and held live messages after endReplay (SPEC §7)', () => {
    const { transport, connection } = setup();
    connection.deliver(msg('connected'));
    connection.holdForReplay();
    assert.equal(connection.deliver(msg('live-1')), true);
    assert.equal(connection.deliver(msg('live-2')), true);
    assert.deepEqual(transport.written, ['connected']);
    assert.equal(connection.writeReplayed(msg('replay-1')), true);
    assert.equal(connection.deliver(msg('live-3')), true);
    assert.equal(connection.writeReplayed(msg('replay-2')), true);
    assert.deepEqual(transport.written, ['connected', 'replay-1', 'replay-2']);
    // flush() (a 'drain') while the replay runs must not release live messages early.
    connection.flush();
    assert.deepEqual(transport.written, ['connected', 'replay-1', 'replay-2']);
    connection.endReplay();
    assert.deepEqual(transport.written, ['connected', 'replay-1', 'replay-2', 'live-1', 'live-2', 'live-3']);
    // After the replay: straight through again.
    connection.deliver(msg('live-4'));
    assert.deepEqual(transport.written.at(-1), 'live-4');
    assert.equal(connection.congested, false);
  });

  test('held live messages still follow priority lanes when the replay ends', () => {
    const { transport, connection } = setup();
    connection.holdForReplay();
    connection.deliver(msg('live-normal', 'Normal'));
    connection.deliver(msg('live-critical', 'Critical'));
    connection.writeReplayed(msg('replay-1'));
    connection.endReplay();
    assert.deepEqual(transport.written, ['replay-1', 'live-critical', 'live-normal']);
  });

  test('counts held live messages and replayed bytes against the slow-consumer cap', () => {
    const { transport, owner, connection } = setup(1000);
    transport.drainsInstantly = false;
    connection.holdForReplay();
    assert.equal(connection.deliver(sized('live-1', 500)), true);
    assert.equal(connection.writeReplayed(sized('replay-1', 500)), true); // 500 + 500 = 1000
    assert.equal(connection.writeReplayed(sized('r2', 10)), false); // 1010
    assert.deepEqual(owner.ended.map((e) => e.reason), ['slow_consumer']);
    connection.endReplay();
    assert.deepEqual(transport.written, ['replay-1', 'r2']);
  });

  test('pings through the transport while open', () => {
    const { transport, connection } = setup();
    connection.ping();
    connection.ping();
    assert.equal(transport.pings, 2);
  });
});
