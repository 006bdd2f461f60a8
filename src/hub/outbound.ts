/**
 * A message on its way to clients, serialised once and shared by every
 * recipient (SPEC §7: "serialised once per notification"). The WebSocket
 * payload and the SSE frame are derived lazily, at most once each, the
 * first time a connection of that kind needs them.
 */

export const PRIORITIES = ['Critical', 'High', 'Normal', 'Low'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** Backlog lane of each priority; lower lanes are written first. */
export const PRIORITY_LANE: Readonly<Record<Priority, number>> = {
  Critical: 0,
  High: 1,
  Normal: 2,
  Low: 3,
};
export const LANE_COUNT = 4;
const CONTROL_LANE = PRIORITY_LANE.High;

export class OutboundMessage {
  readonly json: string;
  /** SSE `event:` name. */
  readonly event: string;
  /** SSE `id:` (notifications only); never contains CR or LF. */
  readonly id: string | undefined;
  readonly lane: number;
  #wsPayload: Buffer | undefined;
  #wsFrame: Buffer | undefined;
  #byteLength = -1;
  #sseFrame: Buffer | undefined;

  constructor(json: string, event: string, lane: number, id?: string) {
    this.json = json;
    this.event = event;
    this.lane = lane;
    this.id = id;
  }

  /** A protocol reply or notice (pong, subscribed, error…). */
  static control(body: { type: string; [field: string]: unknown }): OutboundMessage {
    return new OutboundMessage(JSON.stringify(body), body.type, CONTROL_LANE);
  }

  /** A control message whose JSON the caller assembled (hot paths; `type` is its type field). */
  static controlJson(json: string, type: string): OutboundMessage {
    return new OutboundMessage(json, type, CONTROL_LANE);
  }

  /** UTF-8 size of the JSON, computed once and shared by every recipient. */
  get byteLength(): number {
    if (this.#byteLength < 0) this.#byteLength = Buffer.byteLength(this.json, 'utf8');
    return this.#byteLength;
  }

  get wsPayload(): Buffer {
    return (this.#wsPayload ??= Buffer.from(this.json, 'utf8'));
  }

  /**
   * The whole WebSocket text frame (RFC 6455 §5.2: FIN, opcode 1, server
   * frames unmasked), built once and written as is to every socket: the
   * per-recipient cost of a notification is one socket write.
   */
  get wsFrame(): Buffer {
    if (this.#wsFrame === undefined) {
      const length = this.byteLength;
      const frame = Buffer.allocUnsafe(textFrameHeaderLength(length) + length);
      const headerLength = writeTextFrameHeader(frame, 0, length);
      // Encoded straight into the frame: no intermediate payload buffer
      // unless a compressed connection asks for one.
      if (this.#wsPayload === undefined) frame.write(this.json, headerLength, 'utf8');
      else this.#wsPayload.copy(frame, headerLength);
      this.#wsFrame = frame;
    }
    return this.#wsFrame;
  }

  /**
   * JSON.stringify escapes CR and LF inside strings, so `json` is one line
   * and the frame cannot be split by user data (SPEC §5).
   */
  get sseFrame(): Buffer {
    if (this.#sseFrame === undefined) {
      const idLine = this.id === undefined ? '' : `id: ${this.id}\n`;
      this.#sseFrame = Buffer.from(`${idLine}event: ${this.event}\ndata: ${this.json}\n\n`, 'utf8');
    }
    return this.#sseFrame;
  }
}

/** Bytes of the header of an unmasked WebSocket frame with `payloadLength` bytes of payload. */
export function textFrameHeaderLength(payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 65536 ? 4 : 10;
}

/**
 * Writes the header of a final, unmasked text frame (RFC 6455 §5.2: FIN,
 * opcode 1; servers do not mask) at `offset`; returns its length.
 */
export function writeTextFrameHeader(target: Buffer, offset: number, payloadLength: number): number {
  target[offset] = 0x81;
  if (payloadLength < 126) {
    target[offset + 1] = payloadLength;
    return 2;
  }
  if (payloadLength < 65536) {
    target[offset + 1] = 126;
    target.writeUInt16BE(payloadLength, offset + 2);
    return 4;
  }
  target[offset + 1] = 127;
  target.writeBigUInt64BE(BigInt(payloadLength), offset + 2);
  return 10;
}
