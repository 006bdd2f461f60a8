/**
 * Every Prometheus metric of the service (SPEC §9), defined in one place and
 * updated by the parts where the events happen. Label values are always
 * from closed sets in this code, never from client input, so series stay
 * bounded. Gauges that mirror live state are computed at scrape time.
 * Metrics updated on every request or send are Hot* ones (hot-metrics.ts):
 * the same series, recorded more cheaply.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { HotCounter, HotHistogram, type CounterChild } from './hot-metrics.js';

export interface LiveCounts {
  connections(): number;
  users(): number;
  channels(): number;
  /** Messages waiting in offline queues (null: queue off, no series). */
  queuedMessages?(): Promise<number>;
  /** Deliveries awaiting an ack (null: acks off, no series). */
  pendingAcks?(): Promise<number>;
}

export class Metrics {
  readonly registry = new Registry();

  readonly wsOpened = new HotCounter({
    name: 'ara_ws_connections_opened_total',
    help: 'Realtime connections registered (WebSocket and SSE).',
    registers: [this.registry],
  });
  readonly wsClosed = new Counter({
    name: 'ara_ws_connections_closed_total',
    help: 'Realtime connections ended, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly wsMessagesReceived = new Counter({
    name: 'ara_ws_messages_received_total',
    help: 'Client messages received on WebSocket, by type (invalid for unparseable ones).',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly messagesSent = new HotCounter({
    name: 'ara_messages_sent_total',
    help: 'Notifications dispatched, by target type.',
    labelNames: ['target'] as const,
    registers: [this.registry],
  });
  /** The children of messagesSent, made once: a label lookup per send is measurable on the HTTP path. */
  readonly messagesSentTo: Readonly<Record<'user' | 'users' | 'broadcast' | 'channel' | 'channels', CounterChild>> = {
    user: this.messagesSent.labels('user'),
    users: this.messagesSent.labels('users'),
    broadcast: this.messagesSent.labels('broadcast'),
    channel: this.messagesSent.labels('channel'),
    channels: this.messagesSent.labels('channels'),
  };
  readonly messagesDelivered = new Counter({
    name: 'ara_messages_delivered_total',
    help: 'Notification copies accepted by a connection on this node.',
    registers: [this.registry],
  });
  readonly messagesFailed = new Counter({
    name: 'ara_messages_failed_total',
    help: 'Notification copies a target connection could not take.',
    registers: [this.registry],
  });
  readonly deliveryLatency = new HotHistogram({
    name: 'ara_message_delivery_latency_seconds',
    help: 'Time from a notification being built to its last local write (one sample per dispatch).',
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly slowConsumerDisconnects = new Counter({
    name: 'ara_slow_consumer_disconnects_total',
    help: 'Connections closed because their outbound backlog passed WEBSOCKET_MAX_BUFFERED_BYTES.',
    registers: [this.registry],
  });
  readonly httpRequests = new HotCounter({
    name: 'ara_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new HotHistogram({
    name: 'ara_http_request_duration_seconds',
    help: 'HTTP request duration, by method and route pattern.',
    labelNames: ['method', 'route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: 'ara_batch_size',
    help: 'Items per batch request.',
    buckets: [1, 5, 10, 25, 50, 75, 100],
    registers: [this.registry],
  });
  readonly rateLimitAllowed = new Counter({
    name: 'ara_ratelimit_allowed_total',
    help: 'Rate limiter decisions that let a request through, by limiter.',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly rateLimitDenied = new Counter({
    name: 'ara_ratelimit_denied_total',
    help: 'Rate limiter decisions that refused a request, by limiter.',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });

  readonly queueEnqueued = new Counter({
    name: 'ara_queue_enqueued_total',
    help: 'Notifications queued for offline users (one per user).',
    registers: [this.registry],
  });
  readonly queueDropped = new Counter({
    name: 'ara_queue_dropped_total',
    help: 'Queued notifications dropped because a user queue passed QUEUE_MAX_SIZE_PER_USER.',
    registers: [this.registry],
  });
  readonly queueExpired = new Counter({
    name: 'ara_queue_expired_total',
    help: 'Queued notifications removed unsent because they expired.',
    registers: [this.registry],
  });
  readonly queueReplayed = new Counter({
    name: 'ara_queue_replayed_total',
    help: 'Queued notifications written to a connection on connect.',
    registers: [this.registry],
  });
  readonly ackTracked = new Counter({
    name: 'ara_ack_tracked_total',
    help: 'Deliveries recorded as awaiting an ack (one per user and notification).',
    registers: [this.registry],
  });
  readonly ackReceived = new Counter({
    name: 'ara_ack_received_total',
    help: 'Valid acks received.',
    registers: [this.registry],
  });
  readonly ackExpired = new Counter({
    name: 'ara_ack_expired_total',
    help: 'Tracked deliveries not acked within ACK_TIMEOUT_SECONDS.',
    registers: [this.registry],
  });
  readonly ackLatency = new Histogram({
    name: 'ara_ack_latency_seconds',
    help: 'Time from delivery to ack.',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly redisReconnections = new Counter({
    name: 'ara_redis_reconnections_total',
    help: 'Times the Redis command connection came back after being lost.',
    registers: [this.registry],
  });
  readonly triggerMessages = new Counter({
    name: 'ara_trigger_messages_total',
    help: 'Redis trigger messages received, by result (delivered, invalid, failed).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly clusterMessages = new Counter({
    name: 'ara_cluster_messages_total',
    help: 'Cluster bus messages, by direction (published, received) on this node.',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });

  /** Redis gauges, read at scrape time; only registered when Redis is used. */
  observeRedis(read: { connected(): number; breakerState(): number }): void {
    liveGauge(this.registry, 'ara_redis_connection_status', 'Redis command connection up (1) or down (0).', read.connected);
    liveGauge(
      this.registry,
      'ara_redis_circuit_breaker_state',
      'Redis circuit breaker: 0 closed, 1 open, 2 half-open.',
      read.breakerState,
    );
  }

  constructor(live: LiveCounts) {
    collectDefaultMetrics({ register: this.registry });
    liveGauge(this.registry, 'ara_connections_total', 'Live realtime connections (WS + SSE).', live.connections);
    liveGauge(this.registry, 'ara_users_connected', 'Distinct (tenant, user) pairs connected.', live.users);
    liveGauge(this.registry, 'ara_channels_active', 'Channels with at least one subscriber.', live.channels);
    if (live.queuedMessages) {
      liveGauge(this.registry, 'ara_queue_size_total', 'Notifications waiting in offline queues.', live.queuedMessages);
    }
    if (live.pendingAcks) {
      liveGauge(this.registry, 'ara_ack_pending', 'Deliveries awaiting an ack.', live.pendingAcks);
    }
  }
}

function liveGauge(registry: Registry, name: string, help: string, read: () => number | Promise<number>): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    async collect() {
      this.set(await read());
    },
  });
}
