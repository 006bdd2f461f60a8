/**
 * The service's one logger. Levels mean (STYLE habit 8): error — the
 * service cannot do its job; warn — degraded but recovering; info — a
 * client broke a rule or hit a limit, and lifecycle events; debug and
 * trace — per-connection and per-frame traffic.
 *
 * Secrets never reach a log line: request URLs lose their `token`
 * parameter, and credential headers are never serialised.
 */
import pino, { type Logger } from 'pino';
import type { LogLevel } from '../config/types.js';

export interface LoggerOptions {
  level: LogLevel;
  format: 'pretty' | 'json';
  /** Where lines go; stdout when absent. Tests pass a stream to inspect. */
  destination?: NodeJS.WritableStream;
}

const SECRET_QUERY_PARAMS = /([?&](?:token|access_token|api_key|apikey|key)=)[^&#]*/gi;

/** A URL for the log: any secret-bearing query value replaced. */
export function redactUrl(url: string | undefined): string | undefined {
  return url?.replace(SECRET_QUERY_PARAMS, '$1[REDACTED]');
}

export function createLogger(options: LoggerOptions): Logger {
  const base = {
    level: options.level,
    base: { service: 'ara-notify' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['token', '*.token', 'apiKey', '*.apiKey', 'authorization', '*.authorization', 'headers'],
      censor: '[REDACTED]',
    },
    serializers: { err: pino.stdSerializers.err },
  };
  if (options.destination) return pino(base, options.destination);
  if (options.format === 'pretty') {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(base);
}
