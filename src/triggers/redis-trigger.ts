/**
 * The Redis trigger (SPEC §8): other services PUBLISH Ara 1.0 messages on
 * REDIS_CHANNELS (entries with `*`, `?` or `[` are patterns) and they are
 * delivered like HTTP sends, with `metadata.source` = `redis:<channel>`.
 * A bad message is counted and logged with the problem, never the payload;
 * the subscriber carries on, and resubscribes after every reconnect.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { Metrics } from '../ops/metrics.js';
import type { RedisService } from '../redis/redis-service.js';
import { parseTriggerMessage, type TriggerRequest } from './trigger-message.js';

export interface TriggerSink {
  /** Delivers one parsed trigger message; `channel` and `message` are as received. */
  deliverTrigger(request: TriggerRequest, channel: string, message: string): Promise<void>;
}

export function isPattern(channel: string): boolean {
  return /[*?[]/.test(channel);
}

export class RedisTrigger {
  readonly #channels: readonly string[];
  readonly #tenancyEnabled: boolean;
  readonly #redis: RedisService;
  readonly #sink: TriggerSink;
  readonly #metrics: Metrics;
  readonly #log: Logger;

  constructor(config: Config, redis: RedisService, sink: TriggerSink, metrics: Metrics, log: Logger) {
    this.#channels = config.redis.channels;
    this.#tenancyEnabled = config.tenancy.enabled;
    this.#redis = redis;
    this.#sink = sink;
    this.#metrics = metrics;
    this.#log = log.child({ component: 'trigger' });
  }

  async start(): Promise<void> {
    for (const channel of this.#channels) {
      if (isPattern(channel)) await this.#redis.subscriber.psubscribe(channel);
      else await this.#redis.subscriber.subscribe(channel);
    }
    this.#log.info({ channels: this.#channels }, 'redis trigger subscribed');
  }

  receive(channel: string, message: string): void {
    const parsed = parseTriggerMessage(message, this.#tenancyEnabled);
    if (!parsed.ok) {
      this.#metrics.triggerMessages.inc({ result: 'invalid' });
      this.#log.warn({ channel, problem: parsed.problem, bytes: message.length }, 'dropped an invalid trigger message');
      return;
    }
    this.#sink.deliverTrigger(parsed.request, channel, message).then(
      () => this.#metrics.triggerMessages.inc({ result: 'delivered' }),
      (error: unknown) => {
        this.#metrics.triggerMessages.inc({ result: 'failed' });
        this.#log.warn({ err: error, channel }, 'a trigger message could not be delivered');
      },
    );
  }
}
