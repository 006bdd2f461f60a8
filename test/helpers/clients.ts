/**
 * Real WebSocket and SSE clients for integration tests, each keeping every
 * message it received so tests can wait for and assert exact sequences.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import WebSocket from 'ws';

export interface HandshakeRefusal {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  json: any;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

type Predicate = (message: any) => boolean;

/** Messages in arrival order, with waiting for the next one that matches. */
class Inbox {
  readonly items: any[] = [];
  #cursor = 0;
  #waiters: Array<() => void> = [];

  push(item: any): void {
    this.items.push(item);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /**
   * Resolves with the first message after the cursor matching `predicate`
   * and moves the cursor past it; rejects after `timeoutMs`.
   */
  async next(predicate: Predicate = () => true, timeoutMs = 3000, describe = 'message'): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = this.#cursor; i < this.items.length; i++) {
        if (predicate(this.items[i])) {
          this.#cursor = i + 1;
          return this.items[i];
        }
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`timed out waiting for ${describe}; received: ${JSON.stringify(this.items.slice(-5))}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits `ms` and returns what arrived after the cursor (for "receives nothing" checks). */
  async quietFor(ms: number): Promise<any[]> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.items.slice(this.#cursor);
  }
}

export class TestWs {
  readonly inbox = new Inbox();
  readonly closed: Promise<CloseInfo>;
  readonly socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => {
      socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    socket.on('message', (data, isBinary) => {
      if (isBinary) this.inbox.push({ binary: true, data });
      else this.inbox.push(JSON.parse(data.toString()));
    });
  }

  get messages(): any[] {
    return this.inbox.items;
  }

  /** Opens a connection; rejects with a HandshakeRefusal when the server answers with an HTTP error. */
  static connect(url: string, options: WebSocket.ClientOptions = {}): Promise<TestWs> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, options);
      const client = new TestWs(socket);
      socket.once('open', () => resolve(client));
      socket.once('unexpected-response', (_req, res) => {
        readBody(res).then((body) => reject(refusal(res, body)), reject);
      });
      socket.once('error', (error) => reject(error));
    });
  }

  /** Connects and waits for the `connected` greeting. */
  static async open(url: string, options: WebSocket.ClientOptions = {}): Promise<TestWs> {
    const client = await TestWs.connect(url, options);
    await client.next((m) => m.type === 'connected');
    return client;
  }

  send(message: unknown): void {
    this.socket.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  next(predicate?: Predicate, timeoutMs?: number): Promise<any> {
    return this.inbox.next(predicate, timeoutMs);
  }

  nextOfType(type: string, timeoutMs?: number): Promise<any> {
    return this.inbox.next((m) => m.type === type, timeoutMs, `a "${type}" message`);
  }

  /** Sends and waits for the reply of the given type. */
  async request(message: unknown, replyType: string): Promise<any> {
    this.send(message);
    return this.nextOfType(replyType);
  }

  quietFor(ms: number): Promise<any[]> {
    return this.inbox.quietFor(ms);
  }

  close(): Promise<CloseInfo> {
    this.socket.close(1000);
    return this.closed;
  }
}

export interface SseEvent {
  event: string;
  id?: string;
  data: any;
}

export class TestSse {
  readonly inbox = new Inbox();
  readonly ended: Promise<void>;
  readonly response: IncomingMessage;
  #buffer = '';

  private constructor(response: IncomingMessage) {
    this.response = response;
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => this.#take(chunk));
    this.ended = new Promise((resolve) => {
      response.on('close', resolve);
      response.on('end', resolve);
    });
  }

  get events(): SseEvent[] {
    return this.inbox.items;
  }

  /** Opens a stream; rejects with a HandshakeRefusal for any non-200 answer. */
  static connect(url: string, headers: Record<string, string> = {}): Promise<TestSse> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
        if (res.statusCode !== 200) {
          readBody(res).then((body) => reject(refusal(res, body)), reject);
          return;
        }
        resolve(new TestSse(res));
      });
      req.on('error', reject);
      req.end();
    });
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<TestSse> {
    const client = await TestSse.connect(url, headers);
    await client.next((e) => e.event === 'connected');
    return client;
  }

  next(predicate?: (event: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent> {
    return this.inbox.next(predicate as Predicate, timeoutMs);
  }

  nextEvent(name: string, timeoutMs?: number): Promise<SseEvent> {
    return this.inbox.next((e: SseEvent) => e.event === name, timeoutMs, `an SSE "${name}" event`);
  }

  quietFor(ms: number): Promise<SseEvent[]> {
    return this.inbox.quietFor(ms);
  }

  close(): void {
    this.response.destroy();
  }

  #take(chunk: string): void {
    this.#buffer += chunk;
    let boundary: number;
    while ((boundary = this.#buffer.indexOf('\n\n')) >= 0) {
      const block = this.#buffer.slice(0, boundary);
      this.#buffer = this.#buffer.slice(boundary + 2);
      const event = parseBlock(block);
      if (event) this.inbox.push(event);
    }
  }
}

function parseBlock(block: string): SseEvent | null {
  let event = 'message';
  let id: string | undefined;
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'id') id = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join('\n');
  const parsed: SseEvent = { event, data: JSON.parse(text) };
  if (id !== undefined) parsed.id = id;
  return parsed;
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => (body += chunk));
    res.on('end', () => resolve(body));
    res.on('error', reject);
  });
}

function refusal(res: IncomingMessage, body: string): HandshakeRefusal {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode ?? 0, headers: res.headers, body, json };
}
