/**
 * One Ara node: owns every part, and is the one place that decides the
 * order in which they start and stop (SPEC §10).
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ApiKeyAuthority } from './auth/api-key.js';
import { TokenVerifier } from './auth/jwt.js';
import { OriginPolicy } from './auth/origin.js';
import { limitsFor } from './config/config.js';
import type { Config } from './config/types.js';
import { Delivery } from './delivery/delivery.js';
import { Dispatcher } from './delivery/dispatcher.js';
import { ApiError } from './errors.js';
import type { Connection } from './hub/connection.js';
import { Hub, type TenantSpace } from './hub/hub.js';
import { Liveness } from './hub/liveness.js';
import { OutboundMessage } from './hub/outbound.js';
import { registerApiScope } from './http/api-scope.js';
import { createApp } from './http/app.js';
import { clientAddressResolver, trustFunction } from './http/client-address.js';
import { registerNotificationRoutes } from './http/routes/notifications.js';
import { registerOpsRoutes } from './http/routes/ops.js';
import { registerQueryRoutes } from './http/routes/queries.js';
import { registerStatsRoutes } from './http/routes/stats.js';
import { registerTemplateRoutes } from './http/routes/templates.js';
import { registerTenantRoutes } from './http/routes/tenants.js';
import { createLogger } from './ops/logger.js';
import { Metrics } from './ops/metrics.js';
import { createRateLimits, type RateLimits } from './ratelimit/rate-limits.js';
import { ackSection, queueSection } from './storage/stats-sections.js';
import { backendsInUse, createStores, type StoreSet } from './storage/stores.js';
import { Cluster } from './cluster/cluster.js';
import { registerClusterRoutes } from './http/routes/cluster.js';
import { RedisService } from './redis/redis-service.js';
import { RedisTrigger } from './triggers/redis-trigger.js';
import { NotificationStats } from './tenancy/tenant-stats.js';
import { HandshakeAuthenticator } from './transport/handshake.js';
import { RealtimeService, sendError } from './transport/realtime.js';
import { registerSseRoute } from './transport/sse.js';
import { WsGateway } from './transport/ws.js';
import { VERSION } from './version.js';

export interface NodeOptions {
  /** A ready logger (tests capture output); built from the config otherwise. */
  log?: Logger;
}

export class AraNode {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly hub: Hub;
  readonly stores: StoreSet;
  readonly delivery: Delivery;
  /** The link to Redis when anything uses it (REDIS_URL set). */
  readonly redis: RedisService | null;
  readonly cluster: Cluster | null;
  readonly #trigger: RedisTrigger | null;
  readonly stats = new NotificationStats();
  readonly #app: FastifyInstance;
  readonly #realtime: RealtimeService;
  readonly #gateway: WsGateway;
  readonly #liveness: Liveness;
  readonly #limits: RateLimits | null;
  readonly #startedAtMs = Date.now();
  readonly #timers: NodeJS.Timeout[] = [];
  #accepting = false;
  #stopping: Promise<void> | null = null;

  constructor(config: Config, options: NodeOptions = {}) {
    this.config = config;
    this.log = options.log ?? createLogger(config.log);
    this.hub = createHub(config);
    this.metrics = new Metrics({
      connections: () => this.hub.connectionCount,
      users: () => sumOverSpaces(this.hub, (space) => space.users.size),
      channels: () => sumOverSpaces(this.hub, (space) => space.channels.size),
      queuedMessages: config.queue.enabled ? async () => (await this.stores.queue!.stats(null)).messages : undefined,
      pendingAcks: config.ack.enabled ? async () => (await this.stores.acks!.stats(null)).pendingCount : undefined,
    });
    this.redis = needsRedis(config) ? new RedisService(config, this.log, this.metrics) : null;
    this.stores = createStores(config, this.log, this.redis);
    this.delivery = new Delivery(
      new Dispatcher(this.hub),
      this.stores,
      {
        maxQueuePerUser: config.queue.maxSizePerUser,
        queueTtlMs: config.queue.messageTtlMs,
        historyChannelMaxSize: config.queue.historyChannelMaxSize,
        ackTimeoutMs: config.ack.timeoutMs,
        ackRedeliver: config.ack.redeliver,
      },
      this.metrics,
      this.stats,
      this.log,
    );
    this.cluster = config.cluster.enabled && this.redis ? new Cluster(config, this.redis, this.hub, this.metrics, this.log) : null;
    if (this.cluster) {
      this.delivery.setCluster(this.cluster);
      this.cluster.onRemoteDelivery((remote) => this.delivery.deliverRemote(remote));
    }
    this.#trigger =
      config.redis.triggerEnabled && this.redis
        ? new RedisTrigger(config, this.redis, this.delivery, this.metrics, this.log)
        : null;
    this.redis?.subscriber.onMessage((channel, message) => {
      if (this.cluster?.handles(channel)) this.cluster.receive(channel, message);
      else this.#trigger?.receive(channel, message);
    });

    const verifier = new TokenVerifier(config);
    const origins = new OriginPolicy(config.corsOrigins);
    const keys = new ApiKeyAuthority(config.api.key, config.api.tenantKeys);
    const clientAddress = clientAddressResolver(config.server.trustProxy);
    this.#limits = createRateLimits(config, this.metrics, this.redis, this.log);
    const authenticator = new HandshakeAuthenticator(verifier, origins, this.log);
    authenticator.setConnectGate(this.#limits?.connectGate ?? null);
    this.#realtime = this.#createRealtime(verifier);
    this.#gateway = new WsGateway(authenticator, this.#realtime, this.log, {
      maxMessageBytes: config.websocket.maxMessageBytes,
      compression: config.websocket.compression,
      clientAddress,
    });
    this.#liveness = new Liveness(
      this.hub,
      {
        heartbeatIntervalMs: config.websocket.heartbeatIntervalMs,
        connectionTimeoutMs: config.websocket.connectionTimeoutMs,
        cleanupIntervalMs: config.websocket.cleanupIntervalMs,
        leewayMs: config.jwt.leewaySeconds * 1000,
      },
      expireToken,
    );

    this.#app = createApp({
      log: this.log,
      metrics: this.metrics,
      origins,
      production: config.production,
      trustProxy: trustFunction(config.server.trustProxy) ?? false,
    });
    registerSseRoute(this.#app, authenticator, this.#realtime, {
      clientAddress,
      isAccepting: () => this.#accepting,
    });
    this.#registerHttpRoutes(keys);
  }

  #createRealtime(verifier: TokenVerifier): RealtimeService {
    const { config } = this;
    const realtime = new RealtimeService(this.hub, verifier, this.metrics, this.log, {
      heartbeatIntervalMs: config.websocket.heartbeatIntervalMs,
      maxBufferedBytes: config.websocket.maxBufferedBytes,
      leewayMs: config.jwt.leewaySeconds * 1000,
      messagesPerSecond: config.rateLimit.enabled ? config.rateLimit.wsMessagesPerSecond : 0,
    });
    if (this.stores.queue) realtime.setReplayHandler(this.delivery);
    if (this.stores.acks) realtime.setAckHandler(this.delivery);
    return realtime;
  }

  #registerHttpRoutes(keys: ApiKeyAuthority): void {
    const { config, stores } = this;
    this.#app.get('/ws', async () => {
      throw new ApiError('UPGRADE_REQUIRED', 'This endpoint needs a WebSocket upgrade', {
        headers: { Upgrade: 'websocket', 'Sec-WebSocket-Version': '13' },
      });
    });
    void this.#app.register(async (api) => {
      registerApiScope(api, { tenancyEnabled: config.tenancy.enabled, keys, limiter: this.#limits?.http ?? null });
      registerNotificationRoutes(api, { delivery: this.delivery, templates: stores.templates, metrics: this.metrics });
      registerQueryRoutes(api, this.hub);
      registerTemplateRoutes(api, stores.templates);
      registerTenantRoutes(api, {
        hub: this.hub,
        stats: this.stats,
        tenancyEnabled: config.tenancy.enabled,
        configuredTenants: [...new Set([...config.api.tenantKeys.keys(), ...config.tenancy.tenants.map((t) => t.id)])],
      });
      registerClusterRoutes(api, { hub: this.hub, cluster: this.cluster, serverId: config.cluster.serverId });
      registerStatsRoutes(api, this.hub, this.stats, {
        redis: () => this.redis?.details() ?? { status: 'disabled', connected: false },
        queue: (tenantId) => queueSection(config, stores, tenantId),
        ack: (tenantId) => ackSection(stores, tenantId),
      });
    });
    registerOpsRoutes(this.#app, {
      hub: this.hub,
      metrics: this.metrics,
      keys,
      version: VERSION,
      startedAtMs: this.#startedAtMs,
      metricsToken: config.metricsToken,
      tenancyEnabled: config.tenancy.enabled,
      health: {
        accepting: () => this.#accepting,
        report: () => this.#healthReport(),
      },
    });
  }

  /**
   * /health (SPEC §6.3): degraded while a required backend is down. Redis
   * is required whenever something uses it; PostgreSQL when a store does.
   */
  #healthReport(): { healthy: boolean; sections: Record<string, unknown> } {
    const { config } = this;
    const redisStatus = this.redis?.status ?? 'disabled';
    const sections: Record<string, unknown> = {
      redis: { status: redisStatus, connected: this.redis?.connection.ready ?? false },
      queue: { enabled: config.queue.enabled, backend: config.queue.backend },
    };
    if (this.cluster) sections.cluster = { enabled: true, server_id: this.cluster.nodeId };
    return { healthy: redisStatus === 'disabled' || redisStatus === 'healthy', sections };
  }

  /** Listens on SERVER_HOST:SERVER_PORT (port 0 picks a free one). */
  async start(): Promise<AddressInfo> {
    await this.redis?.start();
    await this.stores.start();
    await this.cluster?.start();
    await this.#trigger?.start();
    await this.#app.ready();
    this.#app.server.on('upgrade', this.#gateway.handleUpgrade);
    await this.#app.listen({ host: this.config.server.host, port: this.config.server.port });
    this.#accepting = true;
    this.#liveness.start();
    this.#limits?.startSweeping();
    this.#startCleanupTasks();
    const address = this.#app.server.address() as AddressInfo;
    this.log.info({ host: address.address, port: address.port, version: VERSION }, 'ara node listening');
    return address;
  }

  get address(): AddressInfo {
    return this.#app.server.address() as AddressInfo;
  }

  #startCleanupTasks(): void {
    const every = (ms: number, task: () => Promise<void>, what: string) => {
      // A run that outlasts the interval is not overlapped by the next one.
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        task()
          .catch((error: unknown) => this.log.warn({ err: error }, `${what} failed`))
          .finally(() => (running = false));
      }, ms);
      timer.unref();
      this.#timers.push(timer);
    };
    if (this.stores.queue) every(this.config.queue.cleanupIntervalMs, () => this.delivery.purgeExpired(), 'queue cleanup');
    if (this.stores.acks) every(this.config.ack.cleanupIntervalMs, () => this.delivery.expireAcks(), 'ack expiry');
  }

  /**
   * Graceful shutdown under one deadline: stop accepting, tell every client
   * (reconnect delays spread so they do not return at once), close them,
   * let in-flight requests finish, close the stores, then close whatever
   * is left.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async #shutdown(): Promise<void> {
    const deadline = Date.now() + this.config.shutdownGraceMs;
    this.log.info({ connections: this.hub.connectionCount }, 'shutting down');
    this.#accepting = false;
    this.#gateway.stopAccepting();
    this.#liveness.stop();
    this.#limits?.stopSweeping();
    for (const timer of this.#timers) clearInterval(timer);
    this.#closeConnections();
    const closed = this.#app.close();
    const finished = await Promise.race([closed.then(() => true), delay(deadline - Date.now() - 500, false)]);
    if (!finished) {
      this.log.warn('shutdown grace ending: closing remaining connections');
      this.#app.server.closeAllConnections();
    }
    const closeBackends = async () => {
      await this.cluster?.stop();
      await this.stores.close();
      await this.redis?.close();
    };
    await Promise.race([closeBackends(), delay(deadline - Date.now() - 300, undefined)]);
    await this.#gateway.terminateAll(Math.max(0, deadline - Date.now() - 100));
    this.log.info('shutdown complete');
  }

  #closeConnections(): void {
    const connections: Connection[] = [];
    for (const space of this.hub.spaces()) connections.push(...space.connections);
    const window = Math.min(60, Math.max(5, Math.ceil(connections.length / 200)));
    for (const connection of connections) {
      const reconnectAfter = 1 + Math.floor(Math.random() * window);
      connection.deliver(
        OutboundMessage.control({ type: 'shutdown', reason: 'Server shutting down', reconnect_after_seconds: reconnectAfter }),
      );
      connection.end('shutdown');
    }
  }
}

/** Redis is connected when REDIS_URL is set and a feature uses it. */
function needsRedis(config: Config): boolean {
  if (config.redis.url === undefined) return false;
  const stores = backendsInUse(config).has('redis');
  const rateLimit = config.rateLimit.enabled && config.rateLimit.backend === 'redis';
  return stores || rateLimit || config.cluster.enabled || config.redis.triggerEnabled;
}

function createHub(config: Config): Hub {
  return new Hub(
    {
      maxConnections: config.websocket.maxConnections,
      maxConnectionsPerUser: config.websocket.maxConnectionsPerUser,
      maxSubscriptionsPerConnection: config.websocket.maxSubscriptionsPerConnection,
    },
    (tenantId) => (config.tenancy.enabled ? limitsFor(config, tenantId) : null),
  );
}

function expireToken(connection: Connection): void {
  sendError(connection, 'TOKEN_EXPIRED', 'Token expired; reconnect with a fresh token');
  connection.end('token_expired');
}

function sumOverSpaces(hub: Hub, count: (space: TenantSpace) => number): number {
  let total = 0;
  for (const space of hub.spaces()) total += count(space);
  return total;
}

function delay<T>(ms: number, value: T): Promise<T> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms), value).unref());
}
