import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEnv } from 'node:util';

import {
  limitsFor,
  loadDotEnv,
  parseConfig,
  tenantEnvKey,
  type Config,
  type Env,
  type ParseOptions,
} from '../../src/config/index.ts';

// ---------------------------------------------------------------------------
// Helpers

function configOf(env: Env, options?: ParseOptions): Config {
  const result = parseConfig(env, options);
  if (!result.ok) assert.fail(`expected ok, got problems:\n${result.problems.join('\n')}`);
  return result.config;
}

function warningsOf(env: Env, options?: ParseOptions): string[] {
  const result = parseConfig(env, options);
  if (!result.ok) assert.fail(`expected ok, got problems:\n${result.problems.join('\n')}`);
  return result.warnings;
}

function problemsOf(env: Env, options?: ParseOptions): string[] {
  const result = parseConfig(env, options);
  if (result.ok) assert.fail('expected problems, got a valid config');
  return result.problems;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function spki(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

/** Files served to parseConfig without touching the disk. */
function filesFrom(files: Record<string, string>): ParseOptions {
  return {
    readFile: (path) => {
      const text = files[path];
      if (text === undefined) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
      return text;
    },
  };
}

const SECRET_32 = 'k7Qw9Zp2Lm4Xv8Rt1Yb6Nc3Hd5Jf0Gs2';
const API_KEY_REAL = 'Zr8Kq2Vw6Xp1Lm9T';

/** A production env with nothing wrong, to which each test adds one mistake. */
const PRODUCTION: Env = {
  RUN_MODE: 'production',
  JWT_SECRET: SECRET_32,
  API_KEY: API_KEY_REAL,
  CORS_ORIGINS: 'https://app.example.com',
  METRICS_TOKEN: 'metrics-token-for-tests-000000000',
};

const RSA = generateKeyPairSync('rsa', { modulusLength: 2048 });
const EC_P256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const EC_P384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const ED25519 = generateKeyPairSync('ed25519');

// The `.env` block of /work/shared/seeds/single-node-commercial-deployment.md,
// copied as written (comments included).
const SEED_DOTENV = `
# 執行模式
RUN_MODE=production

# 服務監聽
SERVER_HOST=0.0.0.0
SERVER_PORT=8081

# JWT 與 API 安全
JWT_SECRET=change-me-to-a-strong-secret-min-32-chars
JWT_ISSUER=your-company
JWT_AUDIENCE=your-product
API_KEY=change-me-to-a-strong-api-key

# 多租戶
TENANT_ENABLED=true
TENANT_DEFAULT_MAX_CONNECTIONS=1000
TENANT_DEFAULT_MAX_CONNECTIONS_PER_USER=5

# CORS 限制（僅允許商業前台/後台來源）
CORS_ORIGINS=https://app.example.com,https://admin.example.com

# Redis 連線（建議僅內網）
REDIS_URL=redis://redis.internal:6379

# WebSocket 連線限制
WEBSOCKET_MAX_CONNECTIONS=20000
WEBSOCKET_MAX_CONNECTIONS_PER_USER=10
WEBSOCKET_MAX_SUBSCRIPTIONS_PER_CONNECTION=50

# 限流（避免濫用）
RATELIMIT_ENABLED=true
RATELIMIT_HTTP_REQUESTS_PER_SECOND=500
RATELIMIT_HTTP_BURST_SIZE=1000

# 離線佇列（視需求啟用）
QUEUE_ENABLED=true
QUEUE_MAX_SIZE_PER_USER=200
QUEUE_MESSAGE_TTL_SECONDS=7200

# ACK 追蹤（視需求啟用）
ACK_ENABLED=true
ACK_TIMEOUT_SECONDS=60

# 可觀測性（視需求啟用）
OTEL_ENABLED=false

# 日誌
RUST_LOG=info
`;

// ---------------------------------------------------------------------------

describe('parseConfig defaults', () => {
  test('an empty development env starts with every SPEC §1 default', () => {
    const config = configOf({});

    assert.equal(config.production, false);
    assert.deepEqual(config.server, { host: '0.0.0.0', port: 8081, trustProxy: { kind: 'none' } });
    assert.deepEqual(config.log, { level: 'info', format: 'pretty' });
    assert.equal(config.jwt.algorithm, 'HS256');
    assert.equal(config.jwt.leewaySeconds, 60);
    assert.equal(config.jwt.publicKey, undefined);
    assert.equal(config.jwt.jwksUrl, undefined);
    assert.equal(config.jwt.issuer, undefined);
    assert.equal(config.jwt.audience, undefined);
    assert.equal(config.tenancy.enabled, false);
    assert.deepEqual(config.tenancy.defaults,
      { maxConnections: 1000, maxConnectionsPerUser: 5, maxSubscriptionsPerConnection: 50 });
    assert.deepEqual(config.corsOrigins, []);
    assert.equal(config.redis.url, undefined);
    assert.deepEqual(config.redis.channels,
      ['notification:user:*', 'notification:broadcast', 'notification:channel:*']);
    assert.equal(config.redis.triggerEnabled, false);
    assert.deepEqual(config.redis.breaker,
      { failureThreshold: 5, successThreshold: 2, resetTimeoutMs: 30_000 });
    assert.deepEqual(config.redis.backoff, { initialDelayMs: 100, maxDelayMs: 30_000 });
    assert.deepEqual(config.database, { url: undefined, poolSize: 10 });
    assert.deepEqual(config.websocket, {
      heartbeatIntervalMs: 30_000,
      connectionTimeoutMs: 120_000,
      cleanupIntervalMs: 60_000,
      maxConnections: 10_000,
      maxConnectionsPerUser: 5,
      maxSubscriptionsPerConnection: 50,
      maxMessageBytes: 65_536,
      maxBufferedBytes: 1_048_576,
      compression: false,
    });
    assert.deepEqual(config.rateLimit, {
      enabled: false, backend: 'local', httpRequestsPerSecond: 100, httpBurstSize: 200,
      wsConnectionsPerMinute: 10, wsMessagesPerSecond: 50,
    });
    assert.deepEqual(config.queue, {
      enabled: false, backend: 'memory', maxSizePerUser: 100, messageTtlMs: 3_600_000,
      cleanupIntervalMs: 300_000, historyChannelMaxSize: 100,
    });
    assert.deepEqual(config.ack, {
      enabled: false, backend: 'memory', timeoutMs: 30_000, cleanupIntervalMs: 60_000,
      redeliver: false,
    });
    assert.deepEqual(config.templates, { backend: 'memory' });
    assert.equal(config.cluster.enabled, false);
    assert.equal(config.cluster.sessionTtlMs, 60_000);
    assert.deepEqual(config.otel, {
      enabled: false, endpoint: 'http://localhost:4317',
      serviceName: 'ara-notification-service', samplingRatio: 1,
    });
    assert.equal(config.metricsToken, undefined);
    assert.equal(config.shutdownGraceMs, 10_000);
  });

  test('generates a JWT secret of at least 32 bytes and an API key in development', () => {
    const config = configOf({});

    assert.equal(config.jwt.generated, true);
    assert.ok(Buffer.byteLength(config.jwt.secret ?? '') >= 32);
    assert.equal(config.api.generated, true);
    assert.match(config.api.key ?? '', /^[A-Za-z0-9_-]{32}$/);
    assert.equal(config.api.tenantKeys.size, 0);
    assert.notEqual(configOf({}).jwt.secret, config.jwt.secret);
  });

  test('generates a cluster server id of ara- and 32 hex characters', () => {
    assert.match(configOf({}).cluster.serverId, /^ara-[0-9a-f]{32}$/);
    assert.equal(configOf({ CLUSTER_SERVER_ID: 'node-1' }).cluster.serverId, 'node-1');
    assert.deepEqual(problemsOf({ CLUSTER_SERVER_ID: 'node 1' }),
      ['CLUSTER_SERVER_ID must be 1-128 characters of A-Z a-z 0-9 . _ : - (got "node 1")']);
  });

  test('warns once for each thing generated or left open', () => {
    assert.deepEqual(warningsOf({}), [
      'JWT_SECRET is not set: a random secret was generated for this run (development only)',
      'API_KEY is not set: a random key was generated for this run (development only)',
      'CORS_ORIGINS is empty: any origin is allowed (development only)',
    ]);
  });

  test('treats an empty string as unset for every kind of variable', () => {
    const config = configOf({
      SERVER_PORT: '', JWT_SECRET: '', API_KEY: '', LOG_LEVEL: '', TENANT_ENABLED: '',
      JWT_ALGORITHM: '', REDIS_URL: '', TRUST_PROXY: '', WEBSOCKET_HEARTBEAT_INTERVAL: '',
    });

    assert.equal(config.server.port, 8081);
    assert.equal(config.jwt.generated, true);
    assert.equal(config.api.generated, true);
    assert.equal(config.log.level, 'info');
    assert.equal(config.tenancy.enabled, false);
    assert.equal(config.jwt.algorithm, 'HS256');
    assert.equal(config.redis.url, undefined);
    assert.equal(config.websocket.heartbeatIntervalMs, 30_000);
  });

  test('SERVER_PORT 0 asks the OS for a free port', () => {
    assert.equal(configOf({ SERVER_PORT: '0' }).server.port, 0);
    assert.equal(configOf({ SERVER_PORT: '65535' }).server.port, 65_535);
  });

  test('ignores unknown variables', () => {
    const config = configOf({ PATH: '/usr/bin', SERVER_PORTS: 'nonsense', HOME: '/root' });
    assert.equal(config.server.port, 8081);
  });
});

describe('RUN_MODE', () => {
  test('production or prod in any case turns on production', () => {
    for (const mode of ['production', 'PRODUCTION', 'Prod', 'prod']) {
      assert.equal(configOf({ ...PRODUCTION, RUN_MODE: mode }).production, true, mode);
    }
  });

  test('anything else is development', () => {
    for (const mode of ['development', 'test', 'staging', 'producton']) {
      assert.equal(configOf({ RUN_MODE: mode }).production, false, mode);
    }
  });
});

describe('the seed deployment .env', () => {
  test('as written, production refuses both placeholders and names each one', () => {
    const env = parseEnv(SEED_DOTENV);

    assert.deepEqual(problemsOf(env), [
      'JWT_SECRET is a placeholder value; set a real secret',
      'API_KEY is a placeholder value; set a real key',
    ]);
  });

  test('with real secrets, every value of the seed reaches its setting', () => {
    const env = {
      ...parseEnv(SEED_DOTENV),
      JWT_SECRET: 'Jq4vX9pL2mZ7wR1tY8bN3cH6dF0gS5kA',
      API_KEY: 'Ux7Pm3Qz9Lw2Rk5Vn8Ty',
      REDIS_URL: 'redis://127.0.0.1:6379',
    };
    const config = configOf(env);

    assert.equal(config.production, true);
    assert.deepEqual(config.server, { host: '0.0.0.0', port: 8081, trustProxy: { kind: 'none' } });
    assert.equal(config.tenancy.enabled, true);
    assert.deepEqual(config.tenancy.defaults,
      { maxConnections: 1000, maxConnectionsPerUser: 5, maxSubscriptionsPerConnection: 50 });
    assert.equal(config.websocket.maxConnections, 20_000);
    assert.equal(config.websocket.maxConnectionsPerUser, 10);
    assert.equal(config.websocket.maxSubscriptionsPerConnection, 50);
    assert.equal(config.rateLimit.enabled, true);
    assert.equal(config.rateLimit.httpRequestsPerSecond, 500);
    assert.equal(config.rateLimit.httpBurstSize, 1000);
    assert.deepEqual(
      [config.queue.enabled, config.queue.backend, config.queue.maxSizePerUser, config.queue.messageTtlMs],
      [true, 'memory', 200, 7_200_000]);
    assert.deepEqual([config.ack.enabled, config.ack.timeoutMs], [true, 60_000]);
    assert.equal(config.otel.enabled, false);
    assert.deepEqual(config.log, { level: 'info', format: 'json' });
    assert.deepEqual(config.corsOrigins, ['https://app.example.com', 'https://admin.example.com']);
    assert.equal(config.jwt.issuer, 'your-company');
    assert.equal(config.jwt.audience, 'your-product');
    assert.equal(config.jwt.secret, 'Jq4vX9pL2mZ7wR1tY8bN3cH6dF0gS5kA');
    assert.equal(config.jwt.generated, false);
    assert.equal(config.api.key, 'Ux7Pm3Qz9Lw2Rk5Vn8Ty');
    assert.equal(config.redis.url, 'redis://127.0.0.1:6379');
    assert.equal(config.redis.triggerEnabled, true);
  });
});

describe('JWT_LEEWAY_SECONDS (C03)', () => {
  for (const bad of ['abc', '-5', '1e12', '1.5', '86401']) {
    test(`refuses ${JSON.stringify(bad)} with a message naming the variable`, () => {
      assert.deepEqual(problemsOf({ JWT_LEEWAY_SECONDS: bad }), [
        `JWT_LEEWAY_SECONDS must be a whole number of seconds from 0 to 86400 (got "${bad}")`,
      ]);
    });
  }

  test('accepts whole seconds, 0 included', () => {
    assert.equal(configOf({ JWT_LEEWAY_SECONDS: '30' }).jwt.leewaySeconds, 30);
    assert.equal(configOf({ JWT_LEEWAY_SECONDS: '0' }).jwt.leewaySeconds, 0);
    assert.equal(configOf({ JWT_LEEWAY_SECONDS: ' 45 ' }).jwt.leewaySeconds, 45);
  });
});

describe('JWT_SECRET (C02)', () => {
  test('production with no secret refuses to start', () => {
    assert.deepEqual(problemsOf({ ...PRODUCTION, JWT_SECRET: undefined }), [
      'JWT_SECRET is required in production with JWT_ALGORITHM=HS256 (at least 32 bytes), '
        + 'or use RS*/ES*/EdDSA with JWT_PUBLIC_KEY or JWT_JWKS_URL',
    ]);
  });

  test('a 31-byte secret is refused in both modes', () => {
    const secret = 'a'.repeat(31);
    const expected = ['JWT_SECRET must be at least 32 bytes (it has 31)'];

    assert.deepEqual(problemsOf({ JWT_SECRET: secret }), expected);
    assert.deepEqual(problemsOf({ ...PRODUCTION, JWT_SECRET: secret }), expected);
  });

  test('a 32-byte secret is accepted in both modes', () => {
    const secret = 'b'.repeat(32);
    assert.equal(configOf({ JWT_SECRET: secret }).jwt.secret, secret);
    assert.equal(configOf({ ...PRODUCTION, JWT_SECRET: secret }).jwt.secret, secret);
    assert.equal(configOf({ JWT_SECRET: secret }).jwt.generated, false);
  });

  test('counts UTF-8 bytes, not characters', () => {
    const thirtyTwoBytes = 'é'.repeat(16);
    const thirtyOneBytes = `${'é'.repeat(15)}a`;

    assert.equal(configOf({ JWT_SECRET: thirtyTwoBytes }).jwt.secret, thirtyTwoBytes);
    assert.deepEqual(problemsOf({ JWT_SECRET: thirtyOneBytes }),
      ['JWT_SECRET must be at least 32 bytes (it has 31)']);
  });

  test('production refuses placeholder secrets; development accepts them', () => {
    const placeholders = [
      'change-me-to-a-strong-secret-min-32-chars', 'CHANGEME-0000000000000000000000000000',
      'your-256-bit-secret-goes-right-here-ok', 'your_jwt_secret_that_is_long_enough_x',
      'secret-secret-secret-secret-secret-secret', 'placeholder-placeholder-placeholder',
      'my-example-secret-which-is-long-enough-x',
    ];
    for (const secret of placeholders) {
      assert.deepEqual(problemsOf({ ...PRODUCTION, JWT_SECRET: secret }),
        ['JWT_SECRET is a placeholder value; set a real secret'], secret);
      assert.equal(configOf({ JWT_SECRET: secret }).jwt.secret, secret);
    }
  });
});

describe('problem reporting', () => {
  test('reports four independent problems together, one line each', () => {
    const problems = problemsOf({
      SERVER_PORT: '70000',
      LOG_LEVEL: 'loud',
      QUEUE_BACKEND: 'mysql',
      WEBSOCKET_COMPRESSION: 'maybe',
    });

    assert.deepEqual(problems, [
      'SERVER_PORT must be a whole number from 0 to 65535 (got "70000")',
      'LOG_LEVEL must be one of trace, debug, info, warn, error (got "loud")',
      'WEBSOCKET_COMPRESSION must be true or false (or 1/0, yes/no, on/off) (got "maybe")',
      'QUEUE_BACKEND must be one of memory, redis, postgres (got "mysql")',
    ]);
  });

  test('never repeats a secret value in a problem line', () => {
    const secrets = {
      JWT_SECRET: 'tiny-jwt-secret-zq',
      API_KEY: 'short-api-key',
      DATABASE_URL: 'mysql://admin:hunter2-db-pass@db.internal/ara',
      REDIS_URL: 'http://:redis-pass-93x@redis.internal:6379',
      TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:tenant-key-z1,loose-tenant-key-without-colon,bad id:another-key-q7',
    };
    const problems = problemsOf({
      ...PRODUCTION, ...secrets, QUEUE_ENABLED: 'true', QUEUE_BACKEND: 'postgres',
    });

    assert.equal(problems.length, 7);
    const text = problems.join('\n');
    for (const fragment of [
      'tiny-jwt-secret-zq', 'short-api-key', 'hunter2-db-pass', 'redis-pass-93x', 'tenant-key-z1',
      'loose-tenant-key', 'another-key-q7', 'bad id',
    ]) {
      assert.ok(!text.includes(fragment), `problem lines leak ${fragment}:\n${text}`);
    }
  });

  test('clips very long values in problem lines', () => {
    const [problem] = problemsOf({ LOG_FORMAT: 'x'.repeat(500) });
    assert.equal(problem, `LOG_FORMAT must be one of pretty, json (got "${'x'.repeat(77)}...")`);
  });
});

describe('JWT_ALGORITHM and public keys', () => {
  test('refuses an unknown algorithm with one line and no follow-on problems', () => {
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'HS257' }), [
      'JWT_ALGORITHM must be one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, '
        + 'EdDSA (got "HS257")',
    ]);
  });

  test('requires the exact spelling', () => {
    assert.equal(problemsOf({ JWT_ALGORITHM: 'hs256' }).length, 1);
    assert.equal(problemsOf({ JWT_ALGORITHM: 'EDDSA', JWT_PUBLIC_KEY: spki(ED25519.publicKey) }).length, 1);
    assert.equal(problemsOf({ JWT_ALGORITHM: 'none' }).length, 1);
  });

  test('RS256 accepts PEM text and keeps it as SPKI PEM, with no secret', () => {
    const config = configOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: spki(RSA.publicKey) });

    assert.equal(config.jwt.algorithm, 'RS256');
    assert.equal(config.jwt.publicKey, spki(RSA.publicKey));
    assert.equal(config.jwt.secret, undefined);
    assert.equal(config.jwt.generated, false);
  });

  test('RS256 accepts PEM text written on one line with literal \\n', () => {
    const oneLine = spki(RSA.publicKey).replace(/\n/g, '\\n');
    assert.equal(oneLine.includes('\n'), false);

    const config = configOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: oneLine });
    assert.equal(config.jwt.publicKey, spki(RSA.publicKey));
  });

  test('RS256 converts a PKCS#1 "RSA PUBLIC KEY" to SPKI', () => {
    const pkcs1 = RSA.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    assert.match(pkcs1, /BEGIN RSA PUBLIC KEY/);

    const config = configOf({ JWT_ALGORITHM: 'RS384', JWT_PUBLIC_KEY: pkcs1 });
    assert.equal(config.jwt.publicKey, spki(RSA.publicKey));
  });

  test('RS256 reads a PEM file when the variable holds a path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ara-config-'));
    try {
      const path = join(dir, 'jwt.pem');
      writeFileSync(path, spki(RSA.publicKey));

      const config = configOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: path });
      assert.equal(config.jwt.publicKey, spki(RSA.publicKey));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a path that cannot be read is a problem naming the path', () => {
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: '/nonexistent/ara/jwt.pem' }), [
      'JWT_PUBLIC_KEY names a file that cannot be read: "/nonexistent/ara/jwt.pem" (ENOENT)',
    ]);
  });

  test('a file that does not hold a public key is a problem', () => {
    const options = filesFrom({ '/keys/notes.txt': 'hello' });
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: '/keys/notes.txt' }, options), [
      'JWT_PUBLIC_KEY (file "/keys/notes.txt") is not a valid PEM public key',
    ]);
  });

  test('garbage PEM text is a problem', () => {
    const pem = '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n';
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: pem }),
      ['JWT_PUBLIC_KEY is not a valid PEM public key']);
  });

  test('an EC key for RS256 is the wrong key type', () => {
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: spki(EC_P256.publicKey) }), [
      'JWT_PUBLIC_KEY holds an EC key on curve prime256v1, but RS256 needs an RSA key',
    ]);
  });

  test('ES256 needs P-256, ES384 needs P-384, EdDSA needs Ed25519', () => {
    assert.equal(configOf({ JWT_ALGORITHM: 'ES256', JWT_PUBLIC_KEY: spki(EC_P256.publicKey) })
      .jwt.publicKey, spki(EC_P256.publicKey));
    assert.equal(configOf({ JWT_ALGORITHM: 'ES384', JWT_PUBLIC_KEY: spki(EC_P384.publicKey) })
      .jwt.publicKey, spki(EC_P384.publicKey));
    assert.equal(configOf({ JWT_ALGORITHM: 'EdDSA', JWT_PUBLIC_KEY: spki(ED25519.publicKey) })
      .jwt.publicKey, spki(ED25519.publicKey));

    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'ES384', JWT_PUBLIC_KEY: spki(EC_P256.publicKey) }),
      ['JWT_PUBLIC_KEY holds an EC key on curve prime256v1, but ES384 needs an EC P-384 key']);
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'EdDSA', JWT_PUBLIC_KEY: spki(RSA.publicKey) }),
      ['JWT_PUBLIC_KEY holds a key of type rsa, but EdDSA needs an Ed25519 key']);
  });

  test('refuses a private key and an RSA key under 2048 bits', () => {
    const privatePem = RSA.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });

    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: privatePem }),
      ['JWT_PUBLIC_KEY holds a private key; give only the public key']);
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: spki(small.publicKey) }),
      ['JWT_PUBLIC_KEY holds a 1024-bit RSA key; RS256 needs at least 2048 bits']);
  });

  test('accepts JWT_PUBLICKEY as an alias and names it in problems', () => {
    assert.equal(configOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLICKEY: spki(RSA.publicKey) })
      .jwt.publicKey, spki(RSA.publicKey));
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_PUBLICKEY: spki(EC_P256.publicKey) }),
      ['JWT_PUBLICKEY holds an EC key on curve prime256v1, but RS256 needs an RSA key']);
  });

  test('asymmetric algorithms need a public key or JWKS URL, even in development', () => {
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256' }),
      ['JWT_PUBLIC_KEY or JWT_JWKS_URL is required with JWT_ALGORITHM=RS256']);
  });

  test('accepts a JWKS URL and refuses anything but http(s)', () => {
    const url = 'https://issuer.example/.well-known/jwks.json';
    assert.equal(configOf({ JWT_ALGORITHM: 'RS256', JWT_JWKS_URL: url }).jwt.jwksUrl, url);
    assert.deepEqual(problemsOf({ JWT_ALGORITHM: 'RS256', JWT_JWKS_URL: 'ftp://issuer.example/jwks' }),
      ['JWT_JWKS_URL must be an http:// or https:// URL (got "ftp://issuer.example/jwks")']);
  });

  test('refuses a public key and a JWKS URL together', () => {
    assert.deepEqual(problemsOf({
      JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: spki(RSA.publicKey),
      JWT_JWKS_URL: 'https://issuer.example/jwks',
    }), ['JWT_PUBLIC_KEY and JWT_JWKS_URL are both set; set only one']);
  });

  test('HS256 leaves a configured public key out and warns', () => {
    const result = parseConfig({ JWT_SECRET: SECRET_32, JWT_PUBLIC_KEY: spki(RSA.publicKey) });
    assert.ok(result.ok);

    assert.equal(result.config.jwt.publicKey, undefined);
    assert.equal(result.config.jwt.secret, SECRET_32);
    assert.ok(result.warnings.includes('JWT_PUBLIC_KEY ignored: JWT_ALGORITHM is HS256; '
      + 'set JWT_ALGORITHM to RS*, ES* or EdDSA to verify with a public key'));
  });

  test('a set secret shorter than 32 bytes is refused even with RS256', () => {
    assert.deepEqual(problemsOf({
      JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: spki(RSA.publicKey), JWT_SECRET: 'short',
    }), ['JWT_SECRET must be at least 32 bytes (it has 5)']);
  });

  test('production with RS256 and a public key needs no secret', () => {
    const config = configOf({
      ...PRODUCTION, JWT_SECRET: undefined, JWT_ALGORITHM: 'RS512', JWT_PUBLIC_KEY: spki(RSA.publicKey),
    });
    assert.equal(config.jwt.secret, undefined);
    assert.equal(config.jwt.algorithm, 'RS512');
  });

  test('keeps issuer and audience as written', () => {
    const config = configOf({ JWT_ISSUER: 'https://issuer.example', JWT_AUDIENCE: 'notify' });
    assert.equal(config.jwt.issuer, 'https://issuer.example');
    assert.equal(config.jwt.audience, 'notify');
  });
});

describe('API_KEY', () => {
  test('production requires a key unless tenant keys exist', () => {
    assert.deepEqual(problemsOf({ ...PRODUCTION, API_KEY: undefined }), [
      'API_KEY is required in production (at least 16 characters) unless tenant keys are '
        + 'configured (TENANT_API_KEYS or TENANTS_FILE)',
    ]);
  });

  test('production refuses a key under 16 characters after trimming', () => {
    assert.deepEqual(problemsOf({ ...PRODUCTION, API_KEY: '  abcdefghijklmno  ' }), [
      'API_KEY must be at least 16 characters after trimming in production (it has 15)',
    ]);
  });

  test('stores the key as written when it is long enough', () => {
    const key = ' abcdefghijklmnop ';
    assert.equal(configOf({ ...PRODUCTION, API_KEY: key }).api.key, key);
  });

  test('production refuses the seed placeholder key', () => {
    assert.deepEqual(problemsOf({ ...PRODUCTION, API_KEY: 'change-me-to-a-strong-api-key' }),
      ['API_KEY is a placeholder value; set a real key']);
  });

  test('production with tenant keys only starts without an operator key', () => {
    const config = configOf({
      ...PRODUCTION, API_KEY: undefined, TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:Qm2Lx8Vr4Tz6Wp0Kn3',
    });
    assert.equal(config.api.key, undefined);
    assert.equal(config.api.generated, false);
  });

  test('development generates no operator key when tenant keys exist', () => {
    const config = configOf({ TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:short' });
    assert.equal(config.api.key, undefined);
    assert.equal(config.api.generated, false);
  });

  test('development accepts a short key and warns', () => {
    const result = parseConfig({ API_KEY: 'dev' });
    assert.ok(result.ok);
    assert.equal(result.config.api.key, 'dev');
    assert.ok(result.warnings.includes('API_KEY is shorter than 16 characters; production would refuse it'));
  });
});

describe('TENANT_API_KEYS', () => {
  test('requires TENANT_ENABLED=true, since every request would otherwise act in "default"', () => {
    assert.deepEqual(problemsOf({ TENANT_API_KEYS: 't-a:tenant-key-0123456789' }), [
      'Tenant API keys (TENANT_API_KEYS or TENANTS_FILE) require TENANT_ENABLED=true',
    ]);
  });

  test('binds keys to tenants by sha256, split on the first colon, several per tenant', () => {
    const config = configOf({
      TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:key-a-one ,  t-b : key:with:colons ,t-a:key-a-two,,',
    });

    assert.deepEqual([...config.api.tenantKeys], [
      ['t-a', [sha256('key-a-one'), sha256('key-a-two')]],
      ['t-b', [sha256('key:with:colons')]],
    ]);
  });

  test('reports malformed entries by position', () => {
    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANT_API_KEYS: 'nocolon,bad id!:k,t-a:,t-b:ok-key' }), [
      'TENANT_API_KEYS entry 1 must be written tenant:key',
      'TENANT_API_KEYS entry 2: tenant id must be 1-64 characters of A-Z a-z 0-9 . _ -',
      'TENANT_API_KEYS entry 3 (tenant "t-a"): key is empty',
    ]);
  });

  test('production refuses short and placeholder tenant keys', () => {
    assert.deepEqual(problemsOf({
      ...PRODUCTION, TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:short-key,t-b:change-me-tenant-key-b',
    }), [
      'TENANT_API_KEYS entry 1 (tenant "t-a"): key must be at least 16 characters in production',
      'TENANT_API_KEYS entry 2 (tenant "t-b"): key is a placeholder value',
    ]);
  });

  test('refuses one key bound to two tenants, or equal to API_KEY', () => {
    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:shared-key,t-b:shared-key' }), [
      'TENANT_API_KEYS/TENANTS_FILE: the same API key is bound to tenants "t-a" and "t-b"',
    ]);
    assert.deepEqual(problemsOf({ API_KEY: 'operator-key-123', TENANT_ENABLED: 'true', TENANT_API_KEYS: 't-a:operator-key-123' }), [
      'TENANT_API_KEYS/TENANTS_FILE: a key of tenant "t-a" is the same as API_KEY',
    ]);
  });
});

describe('TENANTS_FILE', () => {
  const acmeDigest = sha256('acme-key-1');

  test('reads tenants, their keys, limits and JWT keys', () => {
    const file = {
      tenants: [
        {
          id: 'acme', api_keys_sha256: [acmeDigest.toUpperCase()],
          max_connections: 5000, max_connections_per_user: 10,
          jwt: { algorithm: 'HS256', secret: SECRET_32 },
        },
        { id: 't-b', jwt: { algorithm: 'ES256', public_key: spki(EC_P256.publicKey) } },
        { id: 't-c', max_subscriptions_per_connection: 0, jwt: { jwks_url: 'https://t-c.example/jwks' } },
      ],
    };
    const options = filesFrom({ '/etc/ara/tenants.json': JSON.stringify(file) });
    const config = configOf({
      TENANT_ENABLED: 'true', TENANTS_FILE: '/etc/ara/tenants.json', TENANT_API_KEYS: 'acme:acme-key-2,t-b:t-b-key',
    }, options);

    assert.deepEqual(config.tenancy.tenants, [
      {
        id: 'acme', apiKeySha256: [acmeDigest],
        limits: { maxConnections: 5000, maxConnectionsPerUser: 10 },
        jwt: { algorithm: 'HS256', secret: SECRET_32 },
      },
      { id: 't-b', apiKeySha256: [], limits: {}, jwt: { algorithm: 'ES256', publicKey: spki(EC_P256.publicKey) } },
      { id: 't-c', apiKeySha256: [], limits: { maxSubscriptionsPerConnection: 0 }, jwt: { jwksUrl: 'https://t-c.example/jwks' } },
    ]);
    assert.deepEqual([...config.tenancy.overrides], [
      ['acme', { maxConnections: 5000, maxConnectionsPerUser: 10 }],
      ['t-c', { maxSubscriptionsPerConnection: 0 }],
    ]);
    assert.deepEqual([...config.api.tenantKeys], [
      ['acme', [sha256('acme-key-2'), acmeDigest]],
      ['t-b', [sha256('t-b-key')]],
    ]);
  });

  test('file keys alone satisfy production without API_KEY', () => {
    const options = filesFrom({ '/t.json': JSON.stringify({ tenants: [{ id: 'acme', api_keys_sha256: [acmeDigest] }] }) });
    const config = configOf({ ...PRODUCTION, API_KEY: undefined, TENANT_ENABLED: 'true', TENANTS_FILE: '/t.json' }, options);
    assert.equal(config.api.key, undefined);
  });

  test('reports every invalid field with its position', () => {
    const rsaPem = spki(RSA.publicKey);
    const file = {
      tenants: [
        'acme',
        { id: 'bad id' },
        { id: 'ok-1', api_keys_sha256: ['abc', acmeDigest] },
        { id: 'ok-2', max_connections: -1, max_connections_per_user: 1.5, max_connection: 3 },
        { id: 'ok-3', jwt: { algorithm: 'HS256', secret: SECRET_32, jwks_url: 'https://x.example/jwks' } },
        { id: 'ok-4', jwt: { algorithm: 'RS256', secret: SECRET_32 } },
        { id: 'ok-5', jwt: { algorithm: 'HS512', secret: 'short' } },
        { id: 'ok-6', jwt: { algorithm: 'HS256', public_key: rsaPem } },
        { id: 'ok-7', jwt: { algorithm: 'ES256', public_key: rsaPem } },
        { id: 'ok-8', jwt: { jwks_url: 'not a url' } },
        { id: 'ok-9', jwt: { algorithm: 'RS256', jwks_url: 'https://x.example/jwks' } },
        { id: 'ok-10', jwt: { algorithm: 'HS999', secret: SECRET_32 } },
        { id: 'ok-1' },
        { id: 'ok-11', api_keys_sha256: 'abc' },
      ],
    };
    const options = filesFrom({ '/t.json': JSON.stringify(file) });

    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANTS_FILE: '/t.json' }, options), [
      'TENANTS_FILE: tenants[0] must be an object',
      'TENANTS_FILE: tenants[1].id must be 1-64 characters of A-Z a-z 0-9 . _ - (got "bad id")',
      'TENANTS_FILE: tenants[2].api_keys_sha256[0] must be 64 hex characters (the SHA-256 digest of a key)',
      'TENANTS_FILE: tenants[3] has unknown field "max_connection"',
      'TENANTS_FILE: tenants[3].max_connections must be a whole number from 0 to 10000000 (got -1)',
      'TENANTS_FILE: tenants[3].max_connections_per_user must be a whole number from 0 to 10000000 (got 1.5)',
      'TENANTS_FILE: tenants[4].jwt must have exactly one of "secret", "public_key" or "jwks_url"',
      'TENANTS_FILE: tenants[5].jwt.secret needs an HS* algorithm (got "RS256")',
      'TENANTS_FILE: tenants[6].jwt.secret must be a string of at least 32 bytes',
      'TENANTS_FILE: tenants[7].jwt.public_key needs an RS*, ES* or EdDSA algorithm (got "HS256")',
      'TENANTS_FILE: tenants[8].jwt.public_key holds a key of type rsa, but ES256 needs an EC P-256 key',
      'TENANTS_FILE: tenants[9].jwt.jwks_url must be an http:// or https:// URL (got "not a url")',
      'TENANTS_FILE: tenants[10].jwt.algorithm is not used with "jwks_url" (the JWKS names each key\'s algorithm)',
      'TENANTS_FILE: tenants[11].jwt.algorithm must be one of HS256, HS384, HS512, RS256, RS384, RS512, '
        + 'ES256, ES384, EdDSA (got "HS999")',
      'TENANTS_FILE: tenants[13].api_keys_sha256 must be an array of SHA-256 hex digests',
      'TENANTS_FILE: tenants[12].id "ok-1" duplicates tenants[2]',
    ]);
  });

  test('production refuses a placeholder tenant secret', () => {
    const file = { tenants: [{ id: 'acme', jwt: { algorithm: 'HS256', secret: 'your-tenant-secret-of-32-bytes-or-more' } }] };
    const options = filesFrom({ '/t.json': JSON.stringify(file) });
    assert.deepEqual(problemsOf({ ...PRODUCTION, TENANT_ENABLED: 'true', TENANTS_FILE: '/t.json' }, options),
      ['TENANTS_FILE: tenants[0].jwt.secret is a placeholder value; set a real secret']);
  });

  test('an unreadable file, invalid JSON and a wrong shape are one problem each', () => {
    const options = filesFrom({
      '/broken.json': '{"tenants": [{"id": "acme", "jwt": {"secret": "do-not-print-me"',
      '/array.json': '[]',
      '/extra.json': '{"tenants": [], "version": 2}',
    });

    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANTS_FILE: '/missing.json' }, options),
      ['TENANTS_FILE: cannot read "/missing.json" (ENOENT)']);
    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANTS_FILE: '/broken.json' }, options),
      ['TENANTS_FILE: "/broken.json" is not valid JSON']);
    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANTS_FILE: '/array.json' }, options),
      ['TENANTS_FILE: must be a JSON object with a "tenants" array']);
    assert.deepEqual(problemsOf({ TENANT_ENABLED: 'true', TENANTS_FILE: '/extra.json' }, options),
      ['TENANTS_FILE: unknown top-level field "version"']);
  });
});

describe('tenantEnvKey and limitsFor', () => {
  test('tenantEnvKey upper-cases and turns every other character into _', () => {
    assert.equal(tenantEnvKey('t-a'), 'T_A');
    assert.equal(tenantEnvKey('acme.corp'), 'ACME_CORP');
    assert.equal(tenantEnvKey('Mixed_Case-1.x'), 'MIXED_CASE_1_X');
  });

  test('applies TENANT_<ID>_ overrides to the matching tenant only', () => {
    const config = configOf({
      TENANT_DEFAULT_MAX_CONNECTIONS: '300',
      TENANT_T_A_MAX_CONNECTIONS: '7',
      TENANT_T_A_MAX_CONNECTIONS_PER_USER: '2',
      TENANT_ACME_CORP_MAX_SUBSCRIPTIONS_PER_CONNECTION: '9',
    });

    assert.deepEqual(limitsFor(config, 't-a'),
      { maxConnections: 7, maxConnectionsPerUser: 2, maxSubscriptionsPerConnection: 50 });
    assert.deepEqual(limitsFor(config, 'acme.corp'),
      { maxConnections: 300, maxConnectionsPerUser: 5, maxSubscriptionsPerConnection: 9 });
    assert.deepEqual(limitsFor(config, 't-b'),
      { maxConnections: 300, maxConnectionsPerUser: 5, maxSubscriptionsPerConnection: 50 });
    assert.deepEqual(limitsFor(config, 'default'),
      { maxConnections: 300, maxConnectionsPerUser: 5, maxSubscriptionsPerConnection: 50 });
    assert.deepEqual([...config.tenancy.envOverrides.keys()], ['ACME_CORP', 'T_A']);
  });

  test('reads a _PER_USER name as the per-user cap, never as MAX_CONNECTIONS of a longer id', () => {
    const config = configOf({ TENANT_X_MAX_CONNECTIONS_PER_USER: '3' });

    assert.deepEqual([...config.tenancy.envOverrides], [['X', { maxConnectionsPerUser: 3 }]]);
    assert.deepEqual(limitsFor(config, 'x'),
      { maxConnections: 1000, maxConnectionsPerUser: 3, maxSubscriptionsPerConnection: 50 });
    assert.deepEqual(limitsFor(config, 'x-max-connections-per'),
      { maxConnections: 1000, maxConnectionsPerUser: 5, maxSubscriptionsPerConnection: 50 });
  });

  test('an id that itself ends like a limit name still gets its own override', () => {
    const config = configOf({ TENANT_A_MAX_CONNECTIONS_MAX_CONNECTIONS: '4' });
    assert.equal(limitsFor(config, 'a-max-connections').maxConnections, 4);
    assert.equal(limitsFor(config, 'a').maxConnections, 1000);
  });

  test('the environment wins over TENANTS_FILE limits, which win over defaults', () => {
    const file = { tenants: [{ id: 't-a', max_connections: 100, max_connections_per_user: 8 }] };
    const config = configOf({
      TENANT_ENABLED: 'true', TENANTS_FILE: '/t.json', TENANT_T_A_MAX_CONNECTIONS: '7',
    }, filesFrom({ '/t.json': JSON.stringify(file) }));

    assert.deepEqual(limitsFor(config, 't-a'),
      { maxConnections: 7, maxConnectionsPerUser: 8, maxSubscriptionsPerConnection: 50 });
  });

  test('an invalid override is a problem naming its variable', () => {
    assert.deepEqual(problemsOf({ TENANT_T_A_MAX_CONNECTIONS: 'lots', TENANT_DEFAULT_MAX_CONNECTIONS: '-1' }), [
      'TENANT_DEFAULT_MAX_CONNECTIONS must be a whole number from 0 to 10000000 (got "-1")',
      'TENANT_T_A_MAX_CONNECTIONS must be a whole number from 0 to 10000000 (got "lots")',
    ]);
  });
});

describe('CORS_ORIGINS', () => {
  test('trims, drops empties and duplicates, and lower-cases scheme and host', () => {
    const config = configOf({
      CORS_ORIGINS: ' https://App.Example.com , http://localhost:3000,, HTTPS://app.example.com',
    });
    assert.deepEqual(config.corsOrigins, ['https://app.example.com', 'http://localhost:3000']);
  });

  test('keeps a non-default port', () => {
    assert.deepEqual(configOf({ CORS_ORIGINS: 'https://app.example.com:8443' }).corsOrigins,
      ['https://app.example.com:8443']);
  });

  test('refuses anything that is not an exact origin', () => {
    const cases: [string, string][] = [
      ['https://app.example.com/', 'https://app.example.com/'],
      ['app.example.com', 'app.example.com'],
      ['https://app.example.com/path', 'https://app.example.com/path'],
      ['https://app.example.com:443', 'https://app.example.com:443'],
      ['ftp://files.example.com', 'ftp://files.example.com'],
    ];
    for (const [value, shown] of cases) {
      assert.deepEqual(problemsOf({ CORS_ORIGINS: value }), [
        'CORS_ORIGINS entries must be exact origins like https://app.example.com '
          + `(scheme://host[:port], no path or trailing slash) (got "${shown}")`,
      ], value);
    }
  });

  test('refuses * with a hint', () => {
    assert.deepEqual(problemsOf({ CORS_ORIGINS: '*' }), [
      'CORS_ORIGINS cannot contain "*": list exact origins (an empty CORS_ORIGINS allows any '
        + 'origin in development only)',
    ]);
  });

  test('production requires a non-empty list', () => {
    assert.deepEqual(problemsOf({ ...PRODUCTION, CORS_ORIGINS: ' , ' }), [
      'CORS_ORIGINS is required in production: list the allowed origins, comma-separated '
        + '(e.g. https://app.example.com)',
    ]);
  });
});

describe('TRUST_PROXY', () => {
  test('unset or false trusts nobody, true trusts all', () => {
    assert.deepEqual(configOf({}).server.trustProxy, { kind: 'none' });
    assert.deepEqual(configOf({ TRUST_PROXY: 'false' }).server.trustProxy, { kind: 'none' });
    assert.deepEqual(configOf({ TRUST_PROXY: 'TRUE' }).server.trustProxy, { kind: 'all' });
  });

  test('a whole number is a hop count; 0 hops trusts nobody', () => {
    assert.deepEqual(configOf({ TRUST_PROXY: '2' }).server.trustProxy, { kind: 'hops', hops: 2 });
    assert.deepEqual(configOf({ TRUST_PROXY: '0' }).server.trustProxy, { kind: 'none' });
    assert.deepEqual(problemsOf({ TRUST_PROXY: '101' }),
      ['TRUST_PROXY must be a whole number from 0 to 100 (got "101")']);
  });

  test('a list holds IPv4 and IPv6 addresses and CIDRs', () => {
    assert.deepEqual(configOf({ TRUST_PROXY: '10.0.0.1, 172.16.0.0/12,::1,fd00::/8' }).server.trustProxy,
      { kind: 'list', entries: ['10.0.0.1', '172.16.0.0/12', '::1', 'fd00::/8'] });
  });

  test('refuses entries that are not addresses or CIDRs, naming them', () => {
    assert.deepEqual(problemsOf({ TRUST_PROXY: '10.0.0.1,10.0.0.0/33,proxy.local,::1/129,1.2.3.4/8/1' }), [
      'TRUST_PROXY must be true, false, a hop count or comma-separated IP addresses/CIDRs '
        + '(got "10.0.0.0/33", "proxy.local", "::1/129", "1.2.3.4/8/1")',
    ]);
  });
});

describe('booleans', () => {
  test('true/false, 1/0, yes/no, on/off in any case', () => {
    for (const value of ['true', 'TRUE', '1', 'yes', 'Yes', 'on', 'ON']) {
      assert.equal(configOf({ TENANT_ENABLED: value }).tenancy.enabled, true, value);
    }
    for (const value of ['false', 'False', '0', 'no', 'NO', 'off', 'Off']) {
      assert.equal(configOf({ WEBSOCKET_COMPRESSION: value }).websocket.compression, false, value);
    }
  });

  test('anything else is a problem', () => {
    assert.deepEqual(problemsOf({ QUEUE_ENABLED: 'enabled', ACK_REDELIVER: '2' }), [
      'QUEUE_ENABLED must be true or false (or 1/0, yes/no, on/off) (got "enabled")',
      'ACK_REDELIVER must be true or false (or 1/0, yes/no, on/off) (got "2")',
    ]);
  });

  test('ACK_REDELIVER defaults to false and can be turned on', () => {
    assert.equal(configOf({ ACK_REDELIVER: 'on' }).ack.redeliver, true);
  });
});

describe('logging', () => {
  test('RUST_LOG is an alias: its first bare level word', () => {
    const cases: [string, string][] = [
      ['info', 'info'], ['ara=debug,info', 'info'], ['warn,tower=debug', 'warn'],
      ['ara=debug', 'info'], ['TRACE', 'trace'], ['off,error', 'error'],
    ];
    for (const [rustLog, level] of cases) {
      assert.equal(configOf({ RUST_LOG: rustLog }).log.level, level, rustLog);
    }
  });

  test('LOG_LEVEL wins over RUST_LOG and is read without case', () => {
    assert.equal(configOf({ LOG_LEVEL: 'DEBUG', RUST_LOG: 'error' }).log.level, 'debug');
  });

  test('an invalid LOG_LEVEL is a problem; an odd RUST_LOG is not', () => {
    assert.deepEqual(problemsOf({ LOG_LEVEL: 'verbose' }),
      ['LOG_LEVEL must be one of trace, debug, info, warn, error (got "verbose")']);
    assert.equal(configOf({ RUST_LOG: 'nonsense' }).log.level, 'info');
  });

  test('LOG_FORMAT is json in production unless set', () => {
    assert.equal(configOf(PRODUCTION).log.format, 'json');
    assert.equal(configOf({ ...PRODUCTION, LOG_FORMAT: 'pretty' }).log.format, 'pretty');
    assert.equal(configOf({ LOG_FORMAT: 'JSON' }).log.format, 'json');
    assert.deepEqual(problemsOf({ LOG_FORMAT: 'xml' }),
      ['LOG_FORMAT must be one of pretty, json (got "xml")']);
  });
});

describe('Redis, Postgres and backends', () => {
  test('REDIS_URL must be redis:// or rediss://, and its value is not shown', () => {
    assert.deepEqual(problemsOf({ REDIS_URL: 'http://redis.internal:6379' }),
      ['REDIS_URL must start with redis:// or rediss://']);
    assert.deepEqual(problemsOf({ REDIS_URL: 'redis://[bad' }), ['REDIS_URL is not a valid URL']);
    assert.equal(configOf({ REDIS_URL: 'rediss://:pw@redis.internal:6380/2' }).redis.url,
      'rediss://:pw@redis.internal:6380/2');
  });

  test('the trigger is on by default only with REDIS_URL', () => {
    assert.equal(configOf({ REDIS_URL: 'redis://127.0.0.1:6379' }).redis.triggerEnabled, true);
    assert.equal(configOf({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_TRIGGER_ENABLED: 'false' })
      .redis.triggerEnabled, false);
    assert.deepEqual(problemsOf({ REDIS_TRIGGER_ENABLED: 'true' }),
      ['REDIS_TRIGGER_ENABLED=true requires REDIS_URL']);
  });

  test('REDIS_CHANNELS is a trimmed list', () => {
    assert.deepEqual(configOf({ REDIS_CHANNELS: ' app:events , app:user:* ,' }).redis.channels,
      ['app:events', 'app:user:*']);
    assert.deepEqual(problemsOf({ REDIS_CHANNELS: ' , ' }),
      ['REDIS_CHANNELS must list at least one channel (got ",")']);
  });

  test('CLUSTER_ENABLED requires REDIS_URL', () => {
    assert.deepEqual(problemsOf({ CLUSTER_ENABLED: 'true' }), [
      'TEMPLATE_BACKEND=redis requires REDIS_URL',
      'CLUSTER_ENABLED=true requires REDIS_URL',
    ]);
    assert.equal(configOf({ CLUSTER_ENABLED: 'true', REDIS_URL: 'redis://127.0.0.1' }).cluster.enabled, true);
  });

  test('a cluster defaults every store to Redis and refuses per-node stores', () => {
    const cluster = { CLUSTER_ENABLED: 'true', REDIS_URL: 'redis://127.0.0.1', QUEUE_ENABLED: 'true', ACK_ENABLED: 'true' };
    const config = configOf(cluster);
    assert.deepEqual([config.queue.backend, config.ack.backend, config.templates.backend], ['redis', 'redis', 'redis']);
    assert.deepEqual(problemsOf({ ...cluster, QUEUE_BACKEND: 'memory', ACK_BACKEND: 'memory', TEMPLATE_BACKEND: 'memory' }), [
      'CLUSTER_ENABLED with QUEUE_ENABLED requires QUEUE_BACKEND=redis (got memory)',
      'CLUSTER_ENABLED with ACK_ENABLED requires ACK_BACKEND=redis or postgres',
      'CLUSTER_ENABLED requires TEMPLATE_BACKEND=redis or postgres',
    ]);
    assert.equal(configOf({ QUEUE_ENABLED: 'true' }).queue.backend, 'memory');
  });

  test('a redis backend in use requires REDIS_URL; an unused one does not', () => {
    assert.deepEqual(problemsOf({ QUEUE_ENABLED: 'true', QUEUE_BACKEND: 'redis' }),
      ['QUEUE_BACKEND=redis requires REDIS_URL']);
    assert.deepEqual(problemsOf({ RATELIMIT_ENABLED: 'true', RATELIMIT_BACKEND: 'redis' }),
      ['RATELIMIT_BACKEND=redis requires REDIS_URL']);
    assert.deepEqual(problemsOf({ TEMPLATE_BACKEND: 'redis' }),
      ['TEMPLATE_BACKEND=redis requires REDIS_URL']);
    assert.equal(configOf({ QUEUE_BACKEND: 'redis', ACK_BACKEND: 'redis', RATELIMIT_BACKEND: 'redis' })
      .queue.backend, 'redis');
  });

  test('a postgres backend in use requires a postgres DATABASE_URL', () => {
    assert.deepEqual(problemsOf({ ACK_ENABLED: 'true', ACK_BACKEND: 'postgres' }),
      ['ACK_BACKEND=postgres requires DATABASE_URL']);
    const config = configOf({
      ACK_ENABLED: 'true', ACK_BACKEND: 'Postgres', DATABASE_URL: 'postgresql://ara:pw@db/ara',
    });
    assert.deepEqual([config.ack.backend, config.database.url], ['postgres', 'postgresql://ara:pw@db/ara']);
    assert.deepEqual(problemsOf({ DATABASE_URL: 'mysql://ara:pw@db/ara' }),
      ['DATABASE_URL must start with postgres:// or postgresql://']);
  });

  test('an invalid service URL is not also reported as missing', () => {
    assert.deepEqual(problemsOf({ TEMPLATE_BACKEND: 'postgres', DATABASE_URL: 'db.internal' }),
      ['DATABASE_URL must start with postgres:// or postgresql://']);
  });

  test('backend names and pool size are checked', () => {
    assert.deepEqual(problemsOf({ RATELIMIT_BACKEND: 'memory', DATABASE_POOL_SIZE: '0' }), [
      'DATABASE_POOL_SIZE must be a whole number from 1 to 10000 (got "0")',
      'RATELIMIT_BACKEND must be one of local, redis (got "memory")',
    ]);
  });
});

describe('durations, caps and timings', () => {
  test('fractional seconds become whole milliseconds', () => {
    const config = configOf({
      WEBSOCKET_HEARTBEAT_INTERVAL: '0.2', WEBSOCKET_CONNECTION_TIMEOUT: '0.5',
      WEBSOCKET_CLEANUP_INTERVAL: '0.1', ACK_TIMEOUT_SECONDS: '1.25', SHUTDOWN_GRACE_SECONDS: '2.5',
      QUEUE_MESSAGE_TTL_SECONDS: '604800', CLUSTER_SESSION_TTL_SECONDS: '0.0015',
    });

    assert.equal(config.websocket.heartbeatIntervalMs, 200);
    assert.equal(config.websocket.connectionTimeoutMs, 500);
    assert.equal(config.websocket.cleanupIntervalMs, 100);
    assert.equal(config.ack.timeoutMs, 1250);
    assert.equal(config.shutdownGraceMs, 2500);
    assert.equal(config.queue.messageTtlMs, 604_800_000);
    assert.equal(config.cluster.sessionTtlMs, 2);
  });

  test('durations must be above 0 (after rounding) and within their maximum', () => {
    const rule = 'must be a number of seconds greater than 0 and at most 86400';
    assert.deepEqual(problemsOf({
      WEBSOCKET_CLEANUP_INTERVAL: '0', ACK_CLEANUP_INTERVAL_SECONDS: '0.0001',
      QUEUE_CLEANUP_INTERVAL_SECONDS: '1.5.2', SHUTDOWN_GRACE_SECONDS: '86401',
    }), [
      `WEBSOCKET_CLEANUP_INTERVAL ${rule} (got "0")`,
      `QUEUE_CLEANUP_INTERVAL_SECONDS ${rule} (got "1.5.2")`,
      `ACK_CLEANUP_INTERVAL_SECONDS ${rule} (got "0.0001")`,
      `SHUTDOWN_GRACE_SECONDS ${rule} (got "86401")`,
    ]);
  });

  test('the connection timeout must exceed the heartbeat interval', () => {
    const expected = (timeout: number, heartbeat: number): string[] => [
      `WEBSOCKET_CONNECTION_TIMEOUT (${timeout}) must be greater than WEBSOCKET_HEARTBEAT_INTERVAL (${heartbeat})`,
    ];
    assert.deepEqual(problemsOf({ WEBSOCKET_HEARTBEAT_INTERVAL: '30', WEBSOCKET_CONNECTION_TIMEOUT: '30' }),
      expected(30, 30));
    assert.deepEqual(problemsOf({ WEBSOCKET_HEARTBEAT_INTERVAL: '200' }), expected(120, 200));
  });

  test('the cluster session TTL must exceed the heartbeat, only with the cluster on', () => {
    const env = { WEBSOCKET_HEARTBEAT_INTERVAL: '60', WEBSOCKET_CONNECTION_TIMEOUT: '180', REDIS_URL: 'redis://h' };
    assert.equal(configOf(env).cluster.sessionTtlMs, 60_000);
    assert.deepEqual(problemsOf({ ...env, CLUSTER_ENABLED: 'true' }), [
      'CLUSTER_SESSION_TTL_SECONDS (60) must be greater than WEBSOCKET_HEARTBEAT_INTERVAL (60)',
    ]);
  });

  test('byte limits are at least 1024 and at most 1 GiB', () => {
    assert.deepEqual(problemsOf({ WEBSOCKET_MAX_MESSAGE_BYTES: '1023', WEBSOCKET_MAX_BUFFERED_BYTES: '1073741825' }), [
      'WEBSOCKET_MAX_MESSAGE_BYTES must be a whole number of bytes from 1024 to 1073741824 (got "1023")',
      'WEBSOCKET_MAX_BUFFERED_BYTES must be a whole number of bytes from 1024 to 1073741824 (got "1073741825")',
    ]);
  });

  test('caps accept 0 for unlimited and refuse more than 10,000,000', () => {
    assert.equal(configOf({ WEBSOCKET_MAX_CONNECTIONS: '0' }).websocket.maxConnections, 0);
    assert.deepEqual(problemsOf({ WEBSOCKET_MAX_CONNECTIONS: '10000001' }),
      ['WEBSOCKET_MAX_CONNECTIONS must be a whole number from 0 to 10000000 (got "10000001")']);
  });

  test('the backoff ceiling must not be below its start', () => {
    assert.deepEqual(problemsOf({ REDIS_BACKOFF_INITIAL_DELAY_MS: '5000', REDIS_BACKOFF_MAX_DELAY_MS: '1000' }),
      ['REDIS_BACKOFF_MAX_DELAY_MS (1000) must be at least REDIS_BACKOFF_INITIAL_DELAY_MS (5000)']);
  });

  test('OTEL settings are typed', () => {
    const config = configOf({
      OTEL_ENABLED: 'yes', OTEL_ENDPOINT: 'http://collector:4317', OTEL_SAMPLING_RATIO: '0.25',
      OTEL_SERVICE_NAME: 'ara-eu',
    });
    assert.deepEqual(config.otel,
      { enabled: true, endpoint: 'http://collector:4317', serviceName: 'ara-eu', samplingRatio: 0.25 });
    assert.deepEqual(problemsOf({ OTEL_SAMPLING_RATIO: '1.5', OTEL_ENDPOINT: 'collector:4317' }), [
      'OTEL_ENDPOINT must be an http:// or https:// URL (got "collector:4317")',
      'OTEL_SAMPLING_RATIO must be a decimal number from 0 to 1 (got "1.5")',
    ]);
  });

  test('METRICS_TOKEN is kept as written; production warns when it is missing', () => {
    assert.equal(configOf({ METRICS_TOKEN: 'scrape-token' }).metricsToken, 'scrape-token');
    assert.ok(warningsOf({ ...PRODUCTION, METRICS_TOKEN: undefined }).includes(
      'METRICS_TOKEN is not set: /metrics is readable by anyone who can reach the port'));
  });
});

describe('loadDotEnv', () => {
  test('fills in variables from .env, and the real environment wins', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ara-dotenv-'));
    try {
      writeFileSync(join(dir, '.env'), 'A=from-file\nB="quoted value"\nC=from-file\n# comment\n');
      const env: NodeJS.ProcessEnv = { A: 'real', C: '' };

      loadDotEnv(dir, env);

      assert.deepEqual(env, { A: 'real', B: 'quoted value', C: '' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a missing .env changes nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ara-dotenv-'));
    try {
      const env: NodeJS.ProcessEnv = { A: 'real' };
      loadDotEnv(dir, env);
      assert.deepEqual(env, { A: 'real' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('.env.example and docs/configuration.md', () => {
  // Every variable of SPEC §1 (TENANT_<ID>_… written for tenant t-a).
  const SPEC_VARIABLES = [
    'RUN_MODE', 'SERVER_HOST', 'SERVER_PORT', 'TRUST_PROXY', 'LOG_LEVEL', 'RUST_LOG', 'LOG_FORMAT',
    'JWT_SECRET', 'JWT_ALGORITHM', 'JWT_PUBLIC_KEY', 'JWT_JWKS_URL', 'JWT_ISSUER', 'JWT_AUDIENCE',
    'JWT_LEEWAY_SECONDS', 'API_KEY', 'TENANT_API_KEYS', 'TENANTS_FILE', 'TENANT_ENABLED',
    'TENANT_DEFAULT_MAX_CONNECTIONS', 'TENANT_DEFAULT_MAX_CONNECTIONS_PER_USER',
    'TENANT_DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION', 'TENANT_T_A_MAX_CONNECTIONS',
    'TENANT_T_A_MAX_CONNECTIONS_PER_USER', 'TENANT_T_A_MAX_SUBSCRIPTIONS_PER_CONNECTION',
    'CORS_ORIGINS', 'REDIS_URL', 'REDIS_CHANNELS', 'REDIS_TRIGGER_ENABLED',
    'REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD', 'REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD',
    'REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS', 'REDIS_BACKOFF_INITIAL_DELAY_MS',
    'REDIS_BACKOFF_MAX_DELAY_MS', 'DATABASE_URL', 'DATABASE_POOL_SIZE',
    'WEBSOCKET_HEARTBEAT_INTERVAL', 'WEBSOCKET_CONNECTION_TIMEOUT', 'WEBSOCKET_CLEANUP_INTERVAL',
    'WEBSOCKET_MAX_CONNECTIONS', 'WEBSOCKET_MAX_CONNECTIONS_PER_USER',
    'WEBSOCKET_MAX_SUBSCRIPTIONS_PER_CONNECTION', 'WEBSOCKET_MAX_MESSAGE_BYTES',
    'WEBSOCKET_MAX_BUFFERED_BYTES', 'WEBSOCKET_COMPRESSION', 'RATELIMIT_ENABLED', 'RATELIMIT_BACKEND',
    'RATELIMIT_HTTP_REQUESTS_PER_SECOND', 'RATELIMIT_HTTP_BURST_SIZE',
    'RATELIMIT_WS_CONNECTIONS_PER_MINUTE', 'RATELIMIT_WS_MESSAGES_PER_SECOND', 'QUEUE_ENABLED',
    'QUEUE_BACKEND', 'QUEUE_MAX_SIZE_PER_USER', 'QUEUE_MESSAGE_TTL_SECONDS',
    'QUEUE_CLEANUP_INTERVAL_SECONDS', 'HISTORY_CHANNEL_MAX_SIZE', 'ACK_ENABLED', 'ACK_BACKEND',
    'ACK_TIMEOUT_SECONDS', 'ACK_CLEANUP_INTERVAL_SECONDS', 'ACK_REDELIVER', 'TEMPLATE_BACKEND',
    'CLUSTER_ENABLED', 'CLUSTER_SERVER_ID', 'CLUSTER_SESSION_TTL_SECONDS', 'OTEL_ENABLED',
    'OTEL_ENDPOINT', 'OTEL_SERVICE_NAME', 'OTEL_SAMPLING_RATIO', 'METRICS_TOKEN',
    'SHUTDOWN_GRACE_SECONDS',
  ];
  const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
  const docs = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');

  /** The settings without the values that are random on every call. */
  function withoutRandom(config: Config): unknown {
    return {
      ...config,
      jwt: { ...config.jwt, secret: undefined },
      api: { ...config.api, key: undefined },
      cluster: { ...config.cluster, serverId: undefined },
    };
  }

  test('.env.example names every variable on its own line', () => {
    const missing = SPEC_VARIABLES.filter((name) => !new RegExp(`^(# )?${name}=`, 'm').test(example));
    assert.deepEqual(missing, []);
  });

  test('.env.example leaves every secret commented out', () => {
    const active = Object.keys(parseEnv(example));
    for (const secret of ['JWT_SECRET', 'API_KEY', 'TENANT_API_KEYS', 'METRICS_TOKEN', 'DATABASE_URL', 'REDIS_URL']) {
      assert.equal(active.includes(secret), false, secret);
    }
  });

  test('a copy of .env.example behaves exactly like an empty environment', () => {
    assert.deepEqual(withoutRandom(configOf(parseEnv(example))), withoutRandom(configOf({})));
  });

  test('docs/configuration.md documents every variable', () => {
    const documented = (name: string): boolean =>
      docs.includes(name) || docs.includes(name.replace('TENANT_T_A_', 'TENANT_\\<ID\\>_'));
    assert.deepEqual(SPEC_VARIABLES.filter((name) => !documented(name)), []);
  });
});
