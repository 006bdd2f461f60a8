/**
 * Typed settings, one field per variable of SPEC §1. Durations are kept in
 * milliseconds inside the program; the environment speaks seconds.
 * `0 = unlimited` for every cap, as SPEC §1 says.
 */

export type JwtAlgorithm =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'ES256' | 'ES384'
  | 'EdDSA';

export type StoreBackend = 'memory' | 'redis' | 'postgres';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** TRUST_PROXY: unset → socket peer only. */
export type TrustProxy =
  | { kind: 'none' }
  | { kind: 'all' }
  | { kind: 'hops'; hops: number }
  | { kind: 'list'; entries: string[] };

export interface ConnectionLimits {
  /** 0 = unlimited. */
  maxConnections: number;
  maxConnectionsPerUser: number;
  maxSubscriptionsPerConnection: number;
}

/** Per-tenant JWT verification key (TENANTS_FILE `jwt`). */
export type TenantJwt =
  | { algorithm: JwtAlgorithm; secret: string }
  | { algorithm: JwtAlgorithm; publicKey: string }
  | { jwksUrl: string };

export interface TenantDefinition {
  id: string;
  /** Lower-case hex SHA-256 digests of the tenant's API keys. */
  apiKeySha256: string[];
  limits: Partial<ConnectionLimits>;
  jwt?: TenantJwt;
}

export interface Config {
  production: boolean;
  server: { host: string; port: number; trustProxy: TrustProxy };
  log: { level: LogLevel; format: 'pretty' | 'json' };
  jwt: {
    algorithm: JwtAlgorithm;
    /** HMAC secret; for HS* algorithms. Generated in development if unset. */
    secret: string | undefined;
    /** PEM text (read from the file when the variable held a path). */
    publicKey: string | undefined;
    jwksUrl: string | undefined;
    issuer: string | undefined;
    audience: string | undefined;
    leewaySeconds: number;
    /** True when the secret was generated for this run (development only). */
    generated: boolean;
  };
  api: {
    /** Operator key. Generated in development if unset and no tenant keys exist. */
    key: string | undefined;
    generated: boolean;
    /** TENANT_API_KEYS merged with TENANTS_FILE keys: tenant id → sha256 hex digests. */
    tenantKeys: Map<string, string[]>;
  };
  tenancy: {
    enabled: boolean;
    defaults: ConnectionLimits;
    /** TENANTS_FILE limits, by tenant id (env overrides are in envOverrides and win). */
    overrides: Map<string, Partial<ConnectionLimits>>;
    /** Override keys as written in the environment (upper-cased id); matched lazily. */
    envOverrides: Map<string, Partial<ConnectionLimits>>;
    tenants: TenantDefinition[];
  };
  /** Exact origins; empty = any origin (development only). */
  corsOrigins: string[];
  redis: {
    url: string | undefined;
    channels: string[];
    /** REDIS_KEY_PREFIX: first segment of every Redis key this service writes. */
    keyPrefix: string;
    triggerEnabled: boolean;
    breaker: { failureThreshold: number; successThreshold: number; resetTimeoutMs: number };
    backoff: { initialDelayMs: number; maxDelayMs: number };
  };
  database: { url: string | undefined; poolSize: number };
  websocket: {
    heartbeatIntervalMs: number;
    connectionTimeoutMs: number;
    cleanupIntervalMs: number;
    maxConnections: number;
    maxConnectionsPerUser: number;
    maxSubscriptionsPerConnection: number;
    maxMessageBytes: number;
    maxBufferedBytes: number;
    compression: boolean;
  };
  rateLimit: {
    enabled: boolean;
    backend: 'local' | 'redis';
    httpRequestsPerSecond: number;
    httpBurstSize: number;
    wsConnectionsPerMinute: number;
    wsMessagesPerSecond: number;
  };
  queue: {
    enabled: boolean;
    backend: StoreBackend;
    maxSizePerUser: number;
    messageTtlMs: number;
    cleanupIntervalMs: number;
    historyChannelMaxSize: number;
  };
  ack: {
    enabled: boolean;
    backend: StoreBackend;
    timeoutMs: number;
    cleanupIntervalMs: number;
    redeliver: boolean;
  };
  templates: { backend: StoreBackend };
  cluster: { enabled: boolean; serverId: string; sessionTtlMs: number };
  otel: { enabled: boolean; endpoint: string; serviceName: string; samplingRatio: number };
  metricsToken: string | undefined;
  shutdownGraceMs: number;
}

/** Result of reading the environment: either settings or every problem found. */
export type ConfigResult =
  | { ok: true; config: Config; warnings: string[] }
  | { ok: false; problems: string[] };
