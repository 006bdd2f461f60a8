/**
 * A lean HTTP/1.1 keep-alive client for the bench's senders: one request in
 * flight per socket, requests written as one string, responses parsed only
 * as far as the status line, Content-Length (or chunked framing) and the
 * body. Node's http client costs several times more CPU per request, and on
 * a 2-core machine every microsecond the sender spends is taken from the
 * server being measured.
 */
import { connect, type Socket } from 'node:net';

export interface HttpResponse {
  status: number;
  body: Buffer;
}

interface Pending {
  head: string;
  body: string;
  resolve(response: HttpResponse): void;
  reject(error: Error): void;
}

const HEADER_END = Buffer.from('\r\n\r\n');
const CHUNK_END = Buffer.from('\r\n0\r\n\r\n');

class KeepAliveSocket {
  #socket: Socket | null = null;
  #buffer: Buffer | null = null;
  #current: Pending | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(
    readonly client: HttpClient,
    readonly host: string,
    readonly port: number,
  ) {}

  get busy(): boolean {
    return this.#current !== null;
  }

  send(pending: Pending): void {
    this.#current = pending;
    this.#buffer = null;
    const socket = this.#socket ?? this.#open();
    socket.write(pending.body.length > 0 ? pending.head + pending.body : pending.head);
    if (this.client.timeoutMs > 0) {
      this.#timer = setTimeout(() => this.#fail(new Error(`HTTP request timed out after ${this.client.timeoutMs} ms`)), this.client.timeoutMs);
    }
  }

  close(): void {
    this.#socket?.destroy();
    this.#socket = null;
  }

  #open(): Socket {
    const socket = connect({ host: this.host, port: this.port, noDelay: true, ...(this.client.localAddress ? { localAddress: this.client.localAddress } : {}) });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (error) => this.#fail(error));
    socket.on('close', () => {
      if (this.#socket === socket) this.#socket = null;
      this.#fail(new Error('connection closed by the server'));
    });
    this.#socket = socket;
    return socket;
  }

  #onData(chunk: Buffer): void {
    const buffer = (this.#buffer = this.#buffer === null ? chunk : Buffer.concat([this.#buffer, chunk]));
    if (this.#current === null) return;
    const headerEnd = buffer.indexOf(HEADER_END);
    if (headerEnd < 0) return;
    const head = buffer.toString('latin1', 0, headerEnd).toLowerCase();
    const status = Number(head.slice(9, 12));
    const bodyStart = headerEnd + 4;
    const length = /\r\ncontent-length: *(\d+)/.exec(head);
    let body: Buffer;
    if (length !== null) {
      const end = bodyStart + Number(length[1]);
      if (buffer.length < end) return;
      body = buffer.subarray(bodyStart, end);
    } else if (head.includes('\r\ntransfer-encoding: chunked')) {
      const end = buffer.indexOf(CHUNK_END, bodyStart - 2);
      if (end < 0 && !buffer.subarray(bodyStart).toString('latin1').startsWith('0\r\n\r\n')) return;
      body = dechunk(buffer.subarray(bodyStart));
    } else {
      body = Buffer.alloc(0); // 204/304; our servers always send a length otherwise
    }
    const pending = this.#current;
    this.#current = null;
    this.#buffer = null;
    if (this.#timer) clearTimeout(this.#timer);
    if (head.includes('\r\nconnection: close')) this.close();
    pending.resolve({ status, body });
    this.client.next(this);
  }

  #fail(error: Error): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const pending = this.#current;
    this.#current = null;
    this.#buffer = null;
    this.#socket?.destroy();
    this.#socket = null;
    if (pending) {
      pending.reject(error);
      this.client.next(this);
    }
  }
}

function dechunk(raw: Buffer): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset < raw.length) {
    const lineEnd = raw.indexOf('\r\n', offset);
    if (lineEnd < 0) break;
    const size = parseInt(raw.toString('latin1', offset, lineEnd), 16);
    if (!(size > 0)) break;
    parts.push(raw.subarray(lineEnd + 2, lineEnd + 2 + size));
    offset = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

export interface HttpClientOptions {
  /** Sockets kept open; also the most requests in flight. */
  sockets: number;
  headers?: Record<string, string>;
  localAddress?: string;
  /** 0 = none. */
  timeoutMs?: number;
}

/** A pool of keep-alive sockets to one host:port; requests beyond the pool wait in order. */
export class HttpClient {
  readonly localAddress: string | undefined;
  readonly timeoutMs: number;
  readonly #sockets: KeepAliveSocket[];
  readonly #waiting: Pending[] = [];
  readonly #fixedHeaders: string;
  readonly #hostHeader: string;
  #inFlight = 0;

  constructor(
    readonly host: string,
    readonly port: number,
    options: HttpClientOptions,
  ) {
    this.localAddress = options.localAddress;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.#sockets = Array.from({ length: options.sockets }, () => new KeepAliveSocket(this, host, port));
    this.#hostHeader = `Host: ${host}:${port}\r\n`;
    this.#fixedHeaders = Object.entries(options.headers ?? {})
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
  }

  /** Requests sent or waiting for a socket. */
  get inFlight(): number {
    return this.#inFlight;
  }

  request(method: string, path: string, body = ''): Promise<HttpResponse> {
    const bodyHeaders = body.length > 0 ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` : '';
    const head = `${method} ${path} HTTP/1.1\r\n${this.#hostHeader}${this.#fixedHeaders}${bodyHeaders}\r\n`;
    this.#inFlight++;
    return new Promise<HttpResponse>((resolve, reject) => {
      const pending: Pending = {
        head,
        body,
        resolve: (response) => {
          this.#inFlight--;
          resolve(response);
        },
        reject: (error) => {
          this.#inFlight--;
          reject(error);
        },
      };
      const idle = this.#sockets.find((socket) => !socket.busy);
      if (idle) idle.send(pending);
      else this.#waiting.push(pending);
    });
  }

  /**
   * Opens every socket of the pool now (one GET each, all at once), so a
   * measuring window never includes connection set-up: a busy server can
   * leave a new connection's first request waiting for seconds while it
   * serves the established ones.
   */
  async openAll(path = '/health'): Promise<void> {
    const responses = await Promise.all(this.#sockets.map(() => this.request('GET', path)));
    const bad = responses.find((response) => response.status !== 200);
    if (bad) throw new Error(`GET ${path} answered ${bad.status} while opening connections`);
  }

  /** A socket finished its request: give it the next waiting one. */
  next(socket: KeepAliveSocket): void {
    const pending = this.#waiting.shift();
    if (pending) socket.send(pending);
  }

  close(): void {
    for (const socket of this.#sockets) socket.close();
    for (const pending of this.#waiting.splice(0)) pending.reject(new Error('client closed'));
  }
}

/** One-shot JSON GET/POST for control requests (health, stats) through a throwaway client. */
export async function fetchJson(port: number, path: string, headers: Record<string, string> = {}, timeoutMs = 5000): Promise<{ status: number; json: any; text: string }> {
  const client = new HttpClient('127.0.0.1', port, { sockets: 1, headers, timeoutMs });
  try {
    const response = await client.request('GET', path);
    const text = response.body.toString('utf8');
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON (e.g. /metrics)
    }
    return { status: response.status, json, text };
  } finally {
    client.close();
  }
}
