/**
 * Starts a real Ara node in this process on an ephemeral loopback port,
 * with its log lines captured for assertions.
 */
import { Writable } from 'node:stream';
import { SignJWT, type JWTPayload } from 'jose';
import { parseConfig } from '../../src/config/config.ts';
import type { Config } from '../../src/config/types.ts';
import { AraNode } from '../../src/node.ts';
import { createLogger } from '../../src/ops/logger.ts';

export const TEST_SECRET = 'test-secret-0123456789-abcdefghijklmnop';
export const TEST_API_KEY = 'test-operator-key-0123456789';

export const BASE_ENV: Record<string, string> = {
  RUN_MODE: 'development',
  SERVER_HOST: '127.0.0.1',
  SERVER_PORT: '0',
  JWT_SECRET: TEST_SECRET,
  API_KEY: TEST_API_KEY,
  LOG_LEVEL: 'info',
  LOG_FORMAT: 'json',
  SHUTDOWN_GRACE_SECONDS: '3',
};

export interface ApiResponse {
  status: number;
  headers: Headers;
  text: string;
  /** Parsed body, or undefined when the body is not JSON. */
  json: any;
}

export interface TokenOptions {
  ttlSeconds?: number;
  secret?: string;
  alg?: 'HS256' | 'HS384' | 'HS512';
}

/** An HMAC JWT for `sub` (the test secret unless `options.secret`), valid 600 s unless told. */
export function signToken(sub: string, claims: JWTPayload = {}, options: TokenOptions = {}): Promise<string> {
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: options.alg ?? 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + (options.ttlSeconds ?? 600))
    .sign(new TextEncoder().encode(options.secret ?? TEST_SECRET));
}

export class TestNode {
  constructor(
    readonly node: AraNode,
    readonly config: Config,
    /** Log lines as written, JSON each, with the service's real redaction. */
    readonly lines: string[],
  ) {}

  get port(): number {
    return this.node.address.port;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  wsUrl(query = ''): string {
    return `ws://127.0.0.1:${this.port}/ws${query}`;
  }

  /** A token for `sub` signed with the test secret; extra claims merged in. */
  token(sub: string, claims: JWTPayload = {}, options: TokenOptions = {}): Promise<string> {
    return signToken(sub, claims, options);
  }

  /** An HTTP call; JSON bodies are sent with the operator key unless headers say otherwise. */
  async api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse> {
    const init: RequestInit = { method, headers: { 'x-api-key': TEST_API_KEY, ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const response = await fetch(`${this.httpUrl}${path}`, init);
    const text = await response.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: response.status, headers: response.headers, text, json };
  }

  /** Everything the node logged so far, one JSON line each. */
  logText(): string {
    return this.lines.join('');
  }

  async stop(): Promise<void> {
    await this.node.stop();
  }
}

export async function startTestNode(env: Record<string, string> = {}): Promise<TestNode> {
  const result = parseConfig({ ...BASE_ENV, ...env });
  if (!result.ok) throw new Error(`test config invalid:\n${result.problems.join('\n')}`);
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(chunk.toString());
      if (process.env.ARA_TEST_LOGS) process.stderr.write(chunk);
      callback();
    },
  });
  const log = createLogger({ level: result.config.log.level, format: 'json', destination });
  const node = new AraNode(result.config, { log });
  await node.start();
  return new TestNode(node, result.config, lines);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
