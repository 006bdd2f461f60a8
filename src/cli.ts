#!/usr/bin/env node
/**
 * `ara-notify serve` runs a node; `ara-notify token` prints a JWT signed
 * with the configured secret, for trying the service and for scripts.
 */
import { parseArgs } from 'node:util';
import { signToken } from './auth/jwt.js';
import { loadDotEnv, parseConfig } from './config/config.js';
import type { Config } from './config/types.js';
import { AraNode } from './node.js';
import { armExitWatchdog } from './ops/exit-watchdog.js';

const USAGE = `Usage:
  ara-notify serve
  ara-notify token --sub <user> [--tenant <id>] [--ttl <seconds>] [--roles a,b] [--channels x,y]

Configuration comes from the environment and ./.env (see .env.example).`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'serve') return serve();
  if (command === 'token') return printToken(rest);
  process.stderr.write(`${USAGE}\n`);
  return command === undefined || command === '--help' || command === 'help' ? 0 : 2;
}

function loadConfig(): Config | null {
  loadDotEnv(process.cwd(), process.env);
  const result = parseConfig(process.env);
  if (result.ok) return result.config;
  process.stderr.write('Configuration is invalid:\n');
  for (const problem of result.problems) process.stderr.write(`  - ${problem}\n`);
  return null;
}

async function serve(): Promise<number> {
  const config = loadConfig();
  if (config === null) return 1;
  const node = new AraNode(config);
  await node.start();
  await announceDevelopmentCredentials(node);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) process.exit(1);
    const watchdog = armExitWatchdog(Date.now() + config.shutdownGraceMs + WATCHDOG_SLACK_MS);
    node.log.info({ signal, watchdog }, 'signal received');
    node.stop().then(
      () => exitAfterLogSettles(0),
      (error: unknown) => {
        node.log.error({ err: error }, 'shutdown failed');
        exitAfterLogSettles(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('unhandledRejection', (error) => node.log.error({ err: error }, 'unhandled rejection'));
  return -1; // keep running
}

/** Past the grace period, a process still alive is killed (src/ops/exit-watchdog.ts). */
const WATCHDOG_SLACK_MS = 1000;
/** Shutdown ends 100 ms before its deadline; this fits in that margin. */
const LOG_SETTLE_MS = 50;

/**
 * The last log lines are written asynchronously. Exiting at once would
 * leave them to the logger's synchronous exit-time flush, which never
 * returns when stdout is a pipe whose reader has gone; given a moment, the
 * asynchronous write fails instead, and the logger then drops what is left.
 */
function exitAfterLogSettles(code: number): void {
  setTimeout(() => process.exit(code), LOG_SETTLE_MS);
}

/**
 * SPEC §1: with nothing configured in development, the generated secret and
 * key are logged once, with a token and a curl line ready to paste. Nothing
 * configured by the operator is ever printed.
 */
async function announceDevelopmentCredentials(node: AraNode): Promise<void> {
  const { config } = node;
  if (!config.jwt.generated && !config.api.generated) return;
  const port = node.address.port;
  const lines: Record<string, string> = {};
  if (config.jwt.generated) {
    lines.jwtSecret = config.jwt.secret ?? '';
    const token = await signToken(config, { sub: 'demo-user', ttlSeconds: 3600 });
    lines.exampleToken = token;
    lines.websocket = `ws://localhost:${port}/ws?token=${token}`;
  }
  if (config.api.generated) {
    lines.apiKey = config.api.key ?? '';
    lines.curl =
      `curl -s -X POST http://localhost:${port}/api/v1/notifications/send ` +
      `-H 'Content-Type: application/json' -H 'X-API-Key: ${config.api.key}' ` +
      `-d '{"target_user_id":"demo-user","event_type":"demo","payload":{"hello":"world"}}'`;
  }
  // Printed straight to stdout, not through the logger: these are values
  // generated for this run only, and the logger redacts secrets by design.
  process.stdout.write(
    '\nDevelopment credentials generated for this run (set JWT_SECRET and API_KEY to choose your own):\n' +
      Object.entries(lines)
        .map(([name, value]) => `  ${name}: ${value}`)
        .join('\n') +
      '\n\n',
  );
}

async function printToken(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      sub: { type: 'string' },
      tenant: { type: 'string' },
      ttl: { type: 'string' },
      roles: { type: 'string' },
      channels: { type: 'string' },
    },
  });
  if (!values.sub) {
    process.stderr.write(`--sub is required\n${USAGE}\n`);
    return 2;
  }
  const ttl = values.ttl === undefined ? 3600 : Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) {
    process.stderr.write('--ttl must be a positive whole number of seconds\n');
    return 2;
  }
  loadDotEnv(process.cwd(), process.env);
  if (!process.env.JWT_SECRET) {
    process.stderr.write('JWT_SECRET is not set: a token signed with a random secret would not verify anywhere\n');
    return 1;
  }
  const config = loadConfig();
  if (config === null) return 1;
  const token = await signToken(config, {
    sub: values.sub,
    tenantId: values.tenant,
    ttlSeconds: ttl,
    roles: splitList(values.roles),
    channels: splitList(values.channels),
  });
  process.stdout.write(`${token}\n`);
  return 0;
}

function splitList(value: string | undefined): string[] | undefined {
  return value === undefined ? undefined : value.split(',').map((item) => item.trim()).filter(Boolean);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`ara-notify: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
