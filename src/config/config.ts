/**
 * Environment → typed, validated settings (SPEC §1).
 *
 * `parseConfig` is pure: it reads only the env object it is given, plus the
 * files that JWT_PUBLIC_KEY and TENANTS_FILE name (through `options.readFile`).
 * It never stops at the first mistake: every problem is collected, so an
 * operator fixes the whole deployment in one round. A problem line names the
 * variable and the bad value, except for secrets, whose value is never
 * repeated (it would end up in logs and CI output).
 */
import { createHash, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { parseEnv } from 'node:util';

import { isValidTenantId } from '../tenancy/tenant-id.js';
import type {
  Config,
  ConfigResult,
  ConnectionLimits,
  JwtAlgorithm,
  LogLevel,
  StoreBackend,
  TenantDefinition,
  TenantJwt,
  TrustProxy,
} from './types.js';

export type Env = Record<string, string | undefined>;

export interface ParseOptions {
  /** Reads JWT_PUBLIC_KEY and TENANTS_FILE files; UTF-8 `readFileSync` by default. */
  readFile?: (path: string) => string;
}

type ReadFile = (path: string) => string;

// ---------------------------------------------------------------------------
// Vocabulary and limits

const JWT_ALGORITHMS: readonly JwtAlgorithm[] = [
  'HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'EdDSA',
];
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error'];
const STORE_BACKENDS: readonly StoreBackend[] = ['memory', 'redis', 'postgres'];
const DEFAULT_REDIS_CHANNELS = [
  'notification:user:*', 'notification:broadcast', 'notification:channel:*',
];

const DAY_SECONDS = 86_400;
const MAX_CAP = 10_000_000;
const GIB = 1024 * 1024 * 1024;
const MIN_SECRET_BYTES = 32;
const MIN_API_KEY_CHARS = 16;
const MIN_RSA_BITS = 2048;

interface WholeRule { min: number; max: number; unit?: string }

// 0 asks the OS for a free port (tests, side-by-side runs).
const PORT: WholeRule = { min: 0, max: 65_535 };
const CAP: WholeRule = { min: 0, max: MAX_CAP };
const POSITIVE_COUNT: WholeRule = { min: 1, max: MAX_CAP };
const BUFFER_BYTES: WholeRule = { min: 1024, max: GIB, unit: 'bytes' };
const WHOLE_SECONDS: WholeRule = { min: 1, max: DAY_SECONDS, unit: 'seconds' };
const LEEWAY_SECONDS: WholeRule = { min: 0, max: DAY_SECONDS, unit: 'seconds' };
const DELAY_MS: WholeRule = { min: 1, max: DAY_SECONDS * 1000, unit: 'milliseconds' };
const POOL_SIZE: WholeRule = { min: 1, max: 10_000 };
const PROXY_HOPS_MAX = 100;
/** Offline messages may reasonably wait longer than a day; a month is the cap. */
const QUEUE_TTL_MAX_SECONDS = 30 * DAY_SECONDS;

const TENANT_ID_RULE = '1-64 characters of A-Z a-z 0-9 . _ -';
const SERVER_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Values people leave in from templates. The seed deployment ships
 * `change-me-to-a-strong-…` values that are long enough to pass a length
 * check, so production refuses them by shape.
 */
const PLACEHOLDER_PREFIXES = [
  'change-me', 'change_me', 'changeme', 'your-', 'your_', 'secret', 'placeholder',
];

// ---------------------------------------------------------------------------
// Small helpers

/** A value quoted for a problem line; long values are clipped. */
function shown(value: unknown): string {
  const text = typeof value === 'string' && value.length > 80
    ? `${value.slice(0, 77)}...`
    : value;
  return JSON.stringify(text) ?? String(value);
}

function splitList(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter((item) => item !== '');
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

function isPlaceholder(value: string): boolean {
  const lower = value.trim().toLowerCase();
  return lower.includes('example')
    || PLACEHOLDER_PREFIXES.some((prefix) => lower.startsWith(prefix));
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function errorCode(error: unknown): string {
  const code = typeof error === 'object' && error !== null
    ? (error as { code?: unknown }).code
    : undefined;
  return typeof code === 'string' ? code : 'unreadable';
}

function readUtf8(path: string): string {
  return readFileSync(path, 'utf8');
}

/** SPEC §1 `<ID>`: upper-cased, every non-alphanumeric character as `_`. */
export function tenantEnvKey(tenantId: string): string {
  return tenantId.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

// ---------------------------------------------------------------------------
// EnvReader: typed access to the environment that records every problem

class EnvReader {
  readonly problems: string[] = [];
  readonly warnings: string[] = [];
  readonly #env: Env;
  readonly #invalid = new Set<string>();

  constructor(env: Env) {
    this.#env = env;
  }

  names(): string[] {
    return Object.keys(this.#env).sort();
  }

  /** The value as written; an empty string counts as unset. For secrets. */
  raw(name: string): string | undefined {
    const value = this.#env[name];
    return value === undefined || value === '' ? undefined : value;
  }

  /** The trimmed value; blank counts as unset. For everything but secrets. */
  value(name: string): string | undefined {
    const value = this.raw(name)?.trim();
    return value === '' ? undefined : value;
  }

  isSet(name: string): boolean {
    return this.value(name) !== undefined;
  }

  problem(name: string, message: string): void {
    this.#invalid.add(name);
    this.problems.push(message);
  }

  warn(message: string): void {
    this.warnings.push(message);
  }

  /** False once a problem was reported for `name`; used to avoid follow-on problems. */
  isValid(name: string): boolean {
    return !this.#invalid.has(name);
  }

  text(name: string, fallback: string): string {
    return this.value(name) ?? fallback;
  }

  flag(name: string, fallback: boolean): boolean {
    const value = this.value(name);
    if (value === undefined) return fallback;

    const lower = value.toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(lower)) return true;
    if (['false', '0', 'no', 'off'].includes(lower)) return false;

    this.problem(name, `${name} must be true or false (or 1/0, yes/no, on/off) (got ${shown(value)})`);
    return fallback;
  }

  whole(name: string, fallback: number, rule: WholeRule): number {
    const value = this.value(name);
    return value === undefined ? fallback : this.parseWhole(name, value, rule) ?? fallback;
  }

  /** `^\d+$` within the rule's range; anything else (`-5`, `1e12`, `1.5`) is a problem. */
  parseWhole(name: string, value: string, rule: WholeRule): number | undefined {
    const number = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (number >= rule.min && number <= rule.max) return number;

    const unit = rule.unit === undefined ? '' : ` of ${rule.unit}`;
    this.problem(name,
      `${name} must be a whole number${unit} from ${rule.min} to ${rule.max} (got ${shown(value)})`);
    return undefined;
  }

  /**
   * A duration written in seconds, fractions allowed (tests run with short
   * intervals), returned as whole milliseconds greater than 0.
   */
  seconds(name: string, fallbackSeconds: number, maxSeconds = DAY_SECONDS): number {
    const value = this.value(name);
    if (value === undefined) return fallbackSeconds * 1000;

    const seconds = /^\d+(\.\d+)?$/.test(value) ? Number(value) : Number.NaN;
    const ms = Math.round(seconds * 1000);
    if (ms >= 1 && seconds <= maxSeconds) return ms;

    this.problem(name, `${name} must be a number of seconds greater than 0 and at most `
      + `${maxSeconds} (got ${shown(value)})`);
    return fallbackSeconds * 1000;
  }

  /** A decimal in [min, max], e.g. a sampling ratio. */
  decimal(name: string, fallback: number, min: number, max: number): number {
    const value = this.value(name);
    if (value === undefined) return fallback;

    const number = /^(\d+(\.\d+)?|\.\d+)$/.test(value) ? Number(value) : Number.NaN;
    if (number >= min && number <= max) return number;

    this.problem(name, `${name} must be a decimal number from ${min} to ${max} (got ${shown(value)})`);
    return fallback;
  }

  /** One of `allowed`, compared without case unless `exactCase`. */
  choice<T extends string>(name: string, allowed: readonly T[], fallback: T, exactCase = false): T {
    const value = this.value(name);
    if (value === undefined) return fallback;

    const same = (option: T): boolean =>
      exactCase ? option === value : option.toLowerCase() === value.toLowerCase();
    const found = allowed.find(same);
    if (found !== undefined) return found;

    this.problem(name, `${name} must be one of ${allowed.join(', ')} (got ${shown(value)})`);
    return fallback;
  }

  /** An http(s) URL such as an OTLP endpoint or JWKS address. */
  httpUrl(name: string): string | undefined {
    const value = this.value(name);
    if (value === undefined || isHttpUrl(value)) return value;

    this.problem(name, `${name} must be an http:// or https:// URL (got ${shown(value)})`);
    return value;
  }

  /**
   * A service URL that may carry a password, so its value is never shown.
   * Returned even when invalid: "set but wrong" must not also be reported as
   * "missing" by the rules that depend on it.
   */
  serviceUrl(name: string, schemes: readonly string[]): string | undefined {
    const value = this.value(name);
    if (value === undefined) return undefined;

    const lower = value.toLowerCase();
    const spelled = schemes.map((scheme) => `${scheme}//`);
    if (!spelled.some((prefix) => lower.startsWith(prefix))) {
      this.problem(name, `${name} must start with ${spelled.join(' or ')}`);
    } else if (!URL.canParse(value)) {
      this.problem(name, `${name} is not a valid URL`);
    }
    return value;
  }
}

// ---------------------------------------------------------------------------
// Server, logging, origins

function isProductionMode(runMode: string | undefined): boolean {
  const mode = runMode?.trim().toLowerCase();
  return mode === 'production' || mode === 'prod';
}

function readServer(r: EnvReader): Config['server'] {
  return {
    host: r.text('SERVER_HOST', '0.0.0.0'),
    port: r.whole('SERVER_PORT', 8081, PORT),
    trustProxy: readTrustProxy(r),
  };
}

function readTrustProxy(r: EnvReader): TrustProxy {
  const value = r.value('TRUST_PROXY');
  if (value === undefined || value.toLowerCase() === 'false') return { kind: 'none' };
  if (value.toLowerCase() === 'true') return { kind: 'all' };

  if (/^\d+$/.test(value)) {
    const hops = r.parseWhole('TRUST_PROXY', value, { min: 0, max: PROXY_HOPS_MAX }) ?? 0;
    return hops === 0 ? { kind: 'none' } : { kind: 'hops', hops };
  }

  const entries = splitList(value);
  const bad = entries.filter((entry) => !isIpOrCidr(entry));
  if (bad.length === 0 && entries.length > 0) return { kind: 'list', entries };

  r.problem('TRUST_PROXY', 'TRUST_PROXY must be true, false, a hop count or comma-separated '
    + `IP addresses/CIDRs (got ${bad.map(shown).join(', ') || shown(value)})`);
  return { kind: 'none' };
}

function isIpOrCidr(entry: string): boolean {
  const [address = '', prefix, extra] = entry.split('/');
  const version = isIP(address);
  if (version === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;

  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128);
}

function readLog(r: EnvReader, production: boolean): Config['log'] {
  const level = r.isSet('LOG_LEVEL')
    ? r.choice('LOG_LEVEL', LOG_LEVELS, 'info')
    : levelFromRustLog(r.value('RUST_LOG'));
  const format = r.choice('LOG_FORMAT', ['pretty', 'json'] as const, production ? 'json' : 'pretty');
  return { level, format };
}

/**
 * RUST_LOG is EnvFilter syntax (`ara=debug,info`). Ara 1.0 deployments set
 * it, so its first bare level word is honoured; target directives are not
 * ours to interpret, and a filter with no bare level means `info`.
 */
function levelFromRustLog(value: string | undefined): LogLevel {
  const words = splitList(value ?? '').map((word) => word.toLowerCase());
  const level = words.find((word): word is LogLevel => LOG_LEVELS.includes(word as LogLevel));
  return level ?? 'info';
}

/**
 * CORS_ORIGINS entries must be exactly what browsers send in `Origin`
 * (lower-case scheme and host, no path, no default port); anything looser
 * would silently never match, or worse, invite prefix matching.
 */
function readCorsOrigins(r: EnvReader, production: boolean): string[] {
  const entries = splitList(r.value('CORS_ORIGINS') ?? '');
  if (entries.length === 0) {
    if (production) {
      r.problem('CORS_ORIGINS', 'CORS_ORIGINS is required in production: list the allowed '
        + 'origins, comma-separated (e.g. https://app.example.com)');
    } else {
      r.warn('CORS_ORIGINS is empty: any origin is allowed (development only)');
    }
    return [];
  }

  const origins: string[] = [];
  for (const entry of entries) {
    const origin = normaliseOrigin(entry);
    if (origin === undefined) reportBadOrigin(r, entry);
    else if (!origins.includes(origin)) origins.push(origin);
  }
  return origins;
}

function normaliseOrigin(entry: string): string | undefined {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return undefined;
  }
  const web = url.protocol === 'http:' || url.protocol === 'https:';
  return web && url.origin === entry.toLowerCase() ? url.origin : undefined;
}

function reportBadOrigin(r: EnvReader, entry: string): void {
  const message = entry === '*'
    ? 'CORS_ORIGINS cannot contain "*": list exact origins (an empty CORS_ORIGINS allows any '
      + 'origin in development only)'
    : 'CORS_ORIGINS entries must be exact origins like https://app.example.com '
      + `(scheme://host[:port], no path or trailing slash) (got ${shown(entry)})`;
  r.problem('CORS_ORIGINS', message);
}

// ---------------------------------------------------------------------------
// Public keys (JWT_PUBLIC_KEY and TENANTS_FILE `public_key`)

type AsymmetricAlgorithm = Exclude<JwtAlgorithm, 'HS256' | 'HS384' | 'HS512'>;

function isHmac(algorithm: JwtAlgorithm): algorithm is 'HS256' | 'HS384' | 'HS512' {
  return algorithm.startsWith('HS');
}

interface KeyRequirement { type: string; curve?: string; label: string }

const KEY_FOR_ALGORITHM: Record<AsymmetricAlgorithm, KeyRequirement> = {
  RS256: { type: 'rsa', label: 'an RSA key' },
  RS384: { type: 'rsa', label: 'an RSA key' },
  RS512: { type: 'rsa', label: 'an RSA key' },
  ES256: { type: 'ec', curve: 'prime256v1', label: 'an EC P-256 key' },
  ES384: { type: 'ec', curve: 'secp384r1', label: 'an EC P-384 key' },
  EdDSA: { type: 'ed25519', label: 'an Ed25519 key' },
};

type KeyCheck = { pem: string } | { error: string };

/** Deployments paste PEM into one-line env values with literal `\n`. */
function unescapeNewlines(pem: string): string {
  return pem.replace(/\\n/g, '\n');
}

/**
 * Parses PEM text and checks that it fits the algorithm. The key is returned
 * re-exported as SPKI PEM, the one form every verifier accepts (a certificate
 * or PKCS#1 "RSA PUBLIC KEY" is converted here, once).
 */
function checkPublicKey(pemText: string, algorithm: AsymmetricAlgorithm): KeyCheck {
  if (pemText.includes('PRIVATE KEY-----')) {
    return { error: 'holds a private key; give only the public key' };
  }

  let key: KeyObject;
  try {
    key = createPublicKey(pemText);
  } catch {
    return { error: 'is not a valid PEM public key' };
  }

  const mismatch = keyMismatch(key, algorithm);
  if (mismatch !== undefined) return { error: mismatch };
  return { pem: key.export({ type: 'spki', format: 'pem' }).toString() };
}

function keyMismatch(key: KeyObject, algorithm: AsymmetricAlgorithm): string | undefined {
  const wanted = KEY_FOR_ALGORITHM[algorithm];
  const details = key.asymmetricKeyDetails ?? {};
  const fits = key.asymmetricKeyType === wanted.type
    && (wanted.curve === undefined || details.namedCurve === wanted.curve);
  if (!fits) return `holds ${describeKey(key)}, but ${algorithm} needs ${wanted.label}`;

  // JWT libraries refuse short RSA keys at verification time; refuse them at start.
  const bits = details.modulusLength ?? 0;
  if (wanted.type === 'rsa' && bits < MIN_RSA_BITS) {
    return `holds a ${bits}-bit RSA key; ${algorithm} needs at least ${MIN_RSA_BITS} bits`;
  }
  return undefined;
}

function describeKey(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const type = key.asymmetricKeyType ?? 'unknown';
  return curve === undefined ? `a key of type ${type}` : `an EC key on curve ${curve}`;
}

// ---------------------------------------------------------------------------
// JWT

function readJwt(r: EnvReader, production: boolean, readFile: ReadFile): Config['jwt'] {
  const algorithm = r.choice('JWT_ALGORITHM', JWT_ALGORITHMS, 'HS256', true);
  const claims = {
    issuer: r.value('JWT_ISSUER'),
    audience: r.value('JWT_AUDIENCE'),
    leewaySeconds: r.whole('JWT_LEEWAY_SECONDS', 60, LEEWAY_SECONDS),
  };
  const secret = readJwtSecret(r, production);
  const jwksUrl = r.httpUrl('JWT_JWKS_URL');
  const noKeys = { secret: undefined, publicKey: undefined, jwksUrl: undefined, generated: false };

  // An unknown algorithm says nothing about which key to expect: stop here.
  if (!r.isValid('JWT_ALGORITHM')) return { ...claims, ...noKeys, algorithm };

  const keys = isHmac(algorithm)
    ? hmacKeys(r, production, algorithm, secret, jwksUrl)
    : asymmetricKeys(r, algorithm, secret, jwksUrl, readFile);
  if (production && jwksUrl?.startsWith('http:') && keys.jwksUrl !== undefined) {
    r.warn('JWT_JWKS_URL uses plain http: keys fetched over it can be forged on the network');
  }
  return { ...claims, ...noKeys, ...keys, algorithm };
}

/**
 * A set JWT_SECRET is checked whatever the algorithm (C02): a short one is
 * always refused, and production refuses template placeholders.
 */
function readJwtSecret(r: EnvReader, production: boolean): string | undefined {
  const secret = r.raw('JWT_SECRET');
  if (secret === undefined) return undefined;

  const bytes = byteLength(secret);
  if (production && isPlaceholder(secret)) {
    r.problem('JWT_SECRET', 'JWT_SECRET is a placeholder value; set a real secret');
  } else if (bytes < MIN_SECRET_BYTES) {
    r.problem('JWT_SECRET', `JWT_SECRET must be at least ${MIN_SECRET_BYTES} bytes (it has ${bytes})`);
  }
  return secret;
}

/** The variable holding the public key: JWT_PUBLIC_KEY, or its Ara 1.0 spelling. */
function publicKeyVariable(r: EnvReader): string | undefined {
  const both = r.isSet('JWT_PUBLIC_KEY') && r.isSet('JWT_PUBLICKEY');
  if (both) r.warn('JWT_PUBLIC_KEY and JWT_PUBLICKEY are both set; JWT_PUBLIC_KEY is used');
  if (r.isSet('JWT_PUBLIC_KEY')) return 'JWT_PUBLIC_KEY';
  return r.isSet('JWT_PUBLICKEY') ? 'JWT_PUBLICKEY' : undefined;
}

type JwtKeys = Partial<Pick<Config['jwt'], 'secret' | 'publicKey' | 'jwksUrl' | 'generated'>>;

/**
 * HS*: the secret is the only key. Keys for other algorithms are left out of
 * the settings so that no verifier can be tempted to mix them.
 */
function hmacKeys(
  r: EnvReader, production: boolean, algorithm: JwtAlgorithm,
  secret: string | undefined, jwksUrl: string | undefined,
): JwtKeys {
  const unused = [publicKeyVariable(r), jwksUrl && 'JWT_JWKS_URL'].filter(Boolean);
  if (unused.length > 0) {
    r.warn(`${unused.join(' and ')} ignored: JWT_ALGORITHM is ${algorithm}; `
      + 'set JWT_ALGORITHM to RS*, ES* or EdDSA to verify with a public key');
  }
  if (secret !== undefined) return { secret };

  if (production) {
    r.problem('JWT_SECRET', `JWT_SECRET is required in production with JWT_ALGORITHM=${algorithm} `
      + `(at least ${MIN_SECRET_BYTES} bytes), `
      + 'or use RS*/ES*/EdDSA with JWT_PUBLIC_KEY or JWT_JWKS_URL');
    return {};
  }
  r.warn('JWT_SECRET is not set: a random secret was generated for this run (development only)');
  return { secret: randomBytes(32).toString('base64url'), generated: true };
}

function asymmetricKeys(
  r: EnvReader, algorithm: AsymmetricAlgorithm, secret: string | undefined,
  jwksUrl: string | undefined, readFile: ReadFile,
): JwtKeys {
  if (secret !== undefined) r.warn(`JWT_SECRET ignored: JWT_ALGORITHM is ${algorithm}`);

  const keyVariable = publicKeyVariable(r);
  if (keyVariable !== undefined && jwksUrl !== undefined) {
    r.problem(keyVariable, `${keyVariable} and JWT_JWKS_URL are both set; set only one`);
    return {};
  }
  if (keyVariable !== undefined) {
    return { publicKey: readPublicKey(r, keyVariable, algorithm, readFile) };
  }
  if (jwksUrl !== undefined) return { jwksUrl };

  r.problem('JWT_PUBLIC_KEY',
    `JWT_PUBLIC_KEY or JWT_JWKS_URL is required with JWT_ALGORITHM=${algorithm}`);
  return {};
}

/** The variable holds PEM text when it contains `-----BEGIN`, else a file path. */
function readPublicKey(
  r: EnvReader, name: string, algorithm: AsymmetricAlgorithm, readFile: ReadFile,
): string | undefined {
  const value = r.value(name) ?? '';
  let pemText = unescapeNewlines(value);
  let label = name;

  if (!value.includes('-----BEGIN')) {
    label = `${name} (file ${shown(value)})`;
    try {
      pemText = readFile(value);
    } catch (error) {
      r.problem(name, `${name} names a file that cannot be read: ${shown(value)} (${errorCode(error)})`);
      return undefined;
    }
  }

  const checked = checkPublicKey(pemText, algorithm);
  if ('pem' in checked) return checked.pem;
  r.problem(name, `${label} ${checked.error}`);
  return undefined;
}

// ---------------------------------------------------------------------------
// API keys

/** API_KEY; production rules of SPEC §1. Generated in development when nothing else opens the API. */
function readApi(
  r: EnvReader, production: boolean, tenantKeys: Map<string, string[]>, tenantKeysSet: boolean,
): Config['api'] {
  const key = r.raw('API_KEY');
  if (key !== undefined) {
    checkApiKey(r, key, production);
    return { key, generated: false, tenantKeys };
  }
  if (tenantKeysSet) return { key: undefined, generated: false, tenantKeys };

  if (production) {
    r.problem('API_KEY', `API_KEY is required in production (at least ${MIN_API_KEY_CHARS} characters) `
      + 'unless tenant keys are configured (TENANT_API_KEYS or TENANTS_FILE)');
    return { key: undefined, generated: false, tenantKeys };
  }
  r.warn('API_KEY is not set: a random key was generated for this run (development only)');
  return { key: randomBytes(24).toString('base64url'), generated: true, tenantKeys };
}

function checkApiKey(r: EnvReader, key: string, production: boolean): void {
  const length = key.trim().length;
  if (production && isPlaceholder(key)) {
    r.problem('API_KEY', 'API_KEY is a placeholder value; set a real key');
  } else if (production && length < MIN_API_KEY_CHARS) {
    r.problem('API_KEY', `API_KEY must be at least ${MIN_API_KEY_CHARS} characters after `
      + `trimming in production (it has ${length})`);
  } else if (length < MIN_API_KEY_CHARS) {
    r.warn(`API_KEY is shorter than ${MIN_API_KEY_CHARS} characters; production would refuse it`);
  }
}

/** Why a tenant key may not be used, or undefined when it is fine. */
function tenantKeyFault(key: string, production: boolean): string | undefined {
  if (key === '') return 'key is empty';
  if (production && isPlaceholder(key)) return 'key is a placeholder value';
  if (production && key.length < MIN_API_KEY_CHARS) {
    return `key must be at least ${MIN_API_KEY_CHARS} characters in production`;
  }
  return undefined;
}

/** TENANT_API_KEYS: `tenant:key,tenant:key`, split on the first colon (keys may hold colons). */
function readTenantApiKeys(r: EnvReader, production: boolean): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  const entries = splitList(r.raw('TENANT_API_KEYS') ?? '');

  entries.forEach((entry, index) => {
    const parsed = parseTenantKeyEntry(entry, production);
    if (typeof parsed === 'string') {
      r.problem('TENANT_API_KEYS', `TENANT_API_KEYS entry ${index + 1}${parsed}`);
    } else {
      addDigest(keys, parsed.tenantId, sha256Hex(parsed.key));
    }
  });
  return keys;
}

/**
 * One `tenant:key` entry, or the end of a problem line. Neither the entry nor
 * a malformed id is ever shown: either may be the key itself.
 */
function parseTenantKeyEntry(
  entry: string, production: boolean,
): { tenantId: string; key: string } | string {
  const colon = entry.indexOf(':');
  if (colon < 0) return ' must be written tenant:key';

  const tenantId = entry.slice(0, colon).trim();
  const key = entry.slice(colon + 1).trim();
  if (!isValidTenantId(tenantId)) return `: tenant id must be ${TENANT_ID_RULE}`;

  const fault = tenantKeyFault(key, production);
  return fault === undefined ? { tenantId, key } : ` (tenant "${tenantId}"): ${fault}`;
}

function addDigest(keys: Map<string, string[]>, tenantId: string, digest: string): void {
  const digests = keys.get(tenantId) ?? [];
  if (!digests.includes(digest)) digests.push(digest);
  keys.set(tenantId, digests);
}

/**
 * One key must identify one caller: a key bound to two tenants, or equal to
 * the operator key, would make every request carrying it ambiguous.
 */
function checkKeyOwnership(r: EnvReader, tenantKeys: Map<string, string[]>): void {
  const owner = new Map<string, string>();
  const operatorKey = r.raw('API_KEY');
  const operatorDigest = operatorKey === undefined ? undefined : sha256Hex(operatorKey.trim());

  for (const [tenantId, digests] of tenantKeys) {
    for (const digest of digests) {
      const earlier = owner.get(digest);
      if (earlier !== undefined) {
        r.problem('TENANT_API_KEYS', 'TENANT_API_KEYS/TENANTS_FILE: the same API key is bound to '
          + `tenants "${earlier}" and "${tenantId}"`);
      }
      if (digest === operatorDigest) {
        r.problem('TENANT_API_KEYS',
          `TENANT_API_KEYS/TENANTS_FILE: a key of tenant "${tenantId}" is the same as API_KEY`);
      }
      owner.set(digest, tenantId);
    }
  }
}

// ---------------------------------------------------------------------------
// TENANTS_FILE

const TENANT_FIELDS = new Set([
  'id', 'api_keys_sha256', 'max_connections', 'max_connections_per_user',
  'max_subscriptions_per_connection', 'jwt',
]);
const TENANT_JWT_FIELDS = new Set(['algorithm', 'secret', 'public_key', 'jwks_url']);

const FILE_LIMIT_FIELDS = [
  ['max_connections', 'maxConnections'],
  ['max_connections_per_user', 'maxConnectionsPerUser'],
  ['max_subscriptions_per_connection', 'maxSubscriptionsPerConnection'],
] as const;

type Report = (message: string) => void;

/** TENANTS_FILE: the tenants it defines, or [] when unset or unusable. */
function readTenantsFile(r: EnvReader, production: boolean, readFile: ReadFile): TenantDefinition[] {
  const path = r.value('TENANTS_FILE');
  if (path === undefined) return [];

  const report: Report = (message) => r.problem('TENANTS_FILE', `TENANTS_FILE: ${message}`);
  const document = readJsonFile(path, readFile, report);
  if (document === undefined) return [];

  if (!isPlainObject(document) || !Array.isArray(document.tenants)) {
    report('must be a JSON object with a "tenants" array');
    return [];
  }
  for (const field of Object.keys(document)) {
    if (field !== 'tenants') report(`unknown top-level field ${shown(field)}`);
  }

  const tenants = document.tenants.map((entry, index) =>
    parseTenantEntry(entry, `tenants[${index}]`, production, report));
  return withoutDuplicates(tenants, report);
}

function readJsonFile(path: string, readFile: ReadFile, report: Report): unknown {
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    report(`cannot read ${shown(path)} (${errorCode(error)})`);
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    // The parser's message quotes file content, which may include secrets.
    report(`${shown(path)} is not valid JSON`);
    return undefined;
  }
}

function parseTenantEntry(
  entry: unknown, at: string, production: boolean, report: Report,
): TenantDefinition | undefined {
  if (!isPlainObject(entry)) {
    report(`${at} must be an object`);
    return undefined;
  }
  for (const field of Object.keys(entry)) {
    if (!TENANT_FIELDS.has(field)) report(`${at} has unknown field ${shown(field)}`);
  }

  const id = entry.id;
  const idValid = isValidTenantId(id);
  if (!idValid) report(`${at}.id must be ${TENANT_ID_RULE} (got ${shown(id)})`);

  const apiKeySha256 = parseDigests(entry.api_keys_sha256, `${at}.api_keys_sha256`, report);
  const limits = parseFileLimits(entry, at, report);
  const jwt = entry.jwt === undefined
    ? undefined
    : parseTenantJwt(entry.jwt, `${at}.jwt`, production, report);

  if (!idValid) return undefined;
  return jwt === undefined ? { id, apiKeySha256, limits } : { id, apiKeySha256, limits, jwt };
}

/** Digests are not shown in problems: a raw key pasted by mistake would be. */
function parseDigests(value: unknown, at: string, report: Report): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    report(`${at} must be an array of SHA-256 hex digests`);
    return [];
  }

  const digests: string[] = [];
  value.forEach((digest: unknown, index) => {
    if (typeof digest === 'string' && /^[0-9a-fA-F]{64}$/.test(digest)) {
      digests.push(digest.toLowerCase());
    } else {
      report(`${at}[${index}] must be 64 hex characters (the SHA-256 digest of a key)`);
    }
  });
  return digests;
}

function parseFileLimits(
  entry: Record<string, unknown>, at: string, report: Report,
): Partial<ConnectionLimits> {
  const limits: Partial<ConnectionLimits> = {};
  for (const [field, key] of FILE_LIMIT_FIELDS) {
    const value = entry[field];
    if (value === undefined) continue;

    if (Number.isInteger(value) && (value as number) >= 0 && (value as number) <= MAX_CAP) {
      limits[key] = value as number;
    } else {
      report(`${at}.${field} must be a whole number from 0 to ${MAX_CAP} (got ${shown(value)})`);
    }
  }
  return limits;
}

/** The three forms of SPEC §1: `{algorithm, secret}`, `{algorithm, public_key}`, `{jwks_url}`. */
function parseTenantJwt(
  value: unknown, at: string, production: boolean, report: Report,
): TenantJwt | undefined {
  if (!isPlainObject(value)) {
    report(`${at} must be an object`);
    return undefined;
  }
  for (const field of Object.keys(value)) {
    if (!TENANT_JWT_FIELDS.has(field)) report(`${at} has unknown field ${shown(field)}`);
  }

  const forms = ['secret', 'public_key', 'jwks_url'].filter((form) => value[form] !== undefined);
  if (forms.length !== 1) {
    report(`${at} must have exactly one of "secret", "public_key" or "jwks_url"`);
    return undefined;
  }
  if (value.jwks_url !== undefined) return parseTenantJwks(value, at, report);
  return parseTenantKey(value, at, production, report);
}

function parseTenantJwks(
  value: Record<string, unknown>, at: string, report: Report,
): TenantJwt | undefined {
  if (value.algorithm !== undefined) {
    report(`${at}.algorithm is not used with "jwks_url" (the JWKS names each key's algorithm)`);
  }
  const url = value.jwks_url;
  if (typeof url === 'string' && isHttpUrl(url)) return { jwksUrl: url };

  report(`${at}.jwks_url must be an http:// or https:// URL (got ${shown(url)})`);
  return undefined;
}

function parseTenantKey(
  value: Record<string, unknown>, at: string, production: boolean, report: Report,
): TenantJwt | undefined {
  const algorithm = value.algorithm;
  if (!JWT_ALGORITHMS.includes(algorithm as JwtAlgorithm)) {
    report(`${at}.algorithm must be one of ${JWT_ALGORITHMS.join(', ')} (got ${shown(algorithm)})`);
    return undefined;
  }

  const alg = algorithm as JwtAlgorithm;
  if (value.secret !== undefined) return parseTenantSecret(value.secret, alg, at, production, report);
  if (isHmac(alg)) {
    report(`${at}.public_key needs an RS*, ES* or EdDSA algorithm (got "${alg}")`);
    return undefined;
  }

  const pem = value.public_key;
  const checked = typeof pem === 'string'
    ? checkPublicKey(unescapeNewlines(pem), alg)
    : { error: 'must be a PEM string' };
  if ('pem' in checked) return { algorithm: alg, publicKey: checked.pem };

  report(`${at}.public_key ${checked.error}`);
  return undefined;
}

function parseTenantSecret(
  secret: unknown, algorithm: JwtAlgorithm, at: string, production: boolean, report: Report,
): TenantJwt | undefined {
  if (!isHmac(algorithm)) {
    report(`${at}.secret needs an HS* algorithm (got "${algorithm}")`);
    return undefined;
  }
  if (typeof secret !== 'string' || byteLength(secret) < MIN_SECRET_BYTES) {
    report(`${at}.secret must be a string of at least ${MIN_SECRET_BYTES} bytes`);
    return undefined;
  }
  if (production && isPlaceholder(secret)) {
    report(`${at}.secret is a placeholder value; set a real secret`);
    return undefined;
  }
  return { algorithm, secret };
}

function withoutDuplicates(
  tenants: (TenantDefinition | undefined)[], report: Report,
): TenantDefinition[] {
  const firstIndex = new Map<string, number>();
  const unique: TenantDefinition[] = [];

  tenants.forEach((tenant, index) => {
    if (tenant === undefined) return;
    const earlier = firstIndex.get(tenant.id);
    if (earlier !== undefined) {
      report(`tenants[${index}].id "${tenant.id}" duplicates tenants[${earlier}]`);
      return;
    }
    firstIndex.set(tenant.id, index);
    unique.push(tenant);
  });
  return unique;
}

// ---------------------------------------------------------------------------
// Tenancy: defaults, TENANT_<ID>_… overrides, file limits

// Longest first: a `…_MAX_CONNECTIONS_PER_USER` name must never be read as
// MAX_CONNECTIONS of a tenant whose id ends in `_MAX_CONNECTIONS_PER`.
const OVERRIDE_SUFFIXES = [
  ['_MAX_SUBSCRIPTIONS_PER_CONNECTION', 'maxSubscriptionsPerConnection'],
  ['_MAX_CONNECTIONS_PER_USER', 'maxConnectionsPerUser'],
  ['_MAX_CONNECTIONS', 'maxConnections'],
] as const;

interface OverrideName { envKey: string; field: keyof ConnectionLimits }

/** `TENANT_<ID>_<LIMIT>` → its parts; TENANT_DEFAULT_* are the defaults, not an override. */
function parseOverrideName(name: string): OverrideName | undefined {
  if (!name.startsWith('TENANT_')) return undefined;

  const suffix = OVERRIDE_SUFFIXES.find(([ending]) => name.endsWith(ending));
  if (suffix === undefined) return undefined;

  const id = name.slice('TENANT_'.length, name.length - suffix[0].length);
  const envKey = tenantEnvKey(id);
  return id === '' || envKey === 'DEFAULT' ? undefined : { envKey, field: suffix[1] };
}

function readEnvOverrides(r: EnvReader): Map<string, Partial<ConnectionLimits>> {
  const overrides = new Map<string, Partial<ConnectionLimits>>();
  for (const name of r.names()) {
    const parsed = parseOverrideName(name);
    const value = parsed && r.value(name);
    if (parsed === undefined || value === undefined) continue;

    const limit = r.parseWhole(name, value, CAP);
    if (limit === undefined) continue;
    overrides.set(parsed.envKey, { ...overrides.get(parsed.envKey), [parsed.field]: limit });
  }
  return overrides;
}

function readTenancy(r: EnvReader, tenants: TenantDefinition[]): Config['tenancy'] {
  const overrides = new Map<string, Partial<ConnectionLimits>>();
  for (const tenant of tenants) {
    if (Object.keys(tenant.limits).length > 0) overrides.set(tenant.id, tenant.limits);
  }

  return {
    enabled: r.flag('TENANT_ENABLED', false),
    defaults: {
      maxConnections: r.whole('TENANT_DEFAULT_MAX_CONNECTIONS', 1000, CAP),
      maxConnectionsPerUser: r.whole('TENANT_DEFAULT_MAX_CONNECTIONS_PER_USER', 5, CAP),
      maxSubscriptionsPerConnection: r.whole('TENANT_DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION', 50, CAP),
    },
    overrides,
    envOverrides: readEnvOverrides(r),
    tenants,
  };
}

/** Two tenant ids with the same `<ID>` (`t-a`, `t.a`) share their env overrides. */
function warnSharedEnvKeys(r: EnvReader, tenants: TenantDefinition[]): void {
  const byKey = new Map<string, string>();
  for (const { id } of tenants) {
    const other = byKey.get(tenantEnvKey(id));
    if (other !== undefined) {
      r.warn(`Tenants "${other}" and "${id}" share the variable prefix TENANT_${tenantEnvKey(id)}_`);
    }
    byKey.set(tenantEnvKey(id), id);
  }
}

/**
 * The tenant-level caps for one tenant: defaults, then TENANTS_FILE limits,
 * then TENANT_<ID>_… variables (the environment wins over the file).
 */
export function limitsFor(config: Config, tenantId: string): ConnectionLimits {
  const { defaults, overrides, envOverrides } = config.tenancy;
  return {
    ...defaults,
    ...overrides.get(tenantId),
    ...envOverrides.get(tenantEnvKey(tenantId)),
  };
}

// ---------------------------------------------------------------------------
// Redis, database, realtime, delivery, cluster, telemetry

function readRedis(r: EnvReader): Config['redis'] {
  const url = r.serviceUrl('REDIS_URL', ['redis:', 'rediss:']);
  return {
    url,
    channels: readRedisChannels(r),
    keyPrefix: readKeyPrefix(r),
    triggerEnabled: r.flag('REDIS_TRIGGER_ENABLED', url !== undefined),
    breaker: {
      failureThreshold: r.whole('REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD', 5, POSITIVE_COUNT),
      successThreshold: r.whole('REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD', 2, POSITIVE_COUNT),
      resetTimeoutMs: r.whole('REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS', 30, WHOLE_SECONDS) * 1000,
    },
    backoff: {
      initialDelayMs: r.whole('REDIS_BACKOFF_INITIAL_DELAY_MS', 100, DELAY_MS),
      maxDelayMs: r.whole('REDIS_BACKOFF_MAX_DELAY_MS', 30_000, DELAY_MS),
    },
  };
}

/** REDIS_KEY_PREFIX (beyond SPEC): the first segment of every key, so deployments can share a Redis. */
function readKeyPrefix(r: EnvReader): string {
  const prefix = r.text('REDIS_KEY_PREFIX', 'ara');
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(prefix)) {
    r.problem('REDIS_KEY_PREFIX', `REDIS_KEY_PREFIX must be 1-64 characters of A-Z a-z 0-9 . _ - (got ${JSON.stringify(prefix)})`);
    return 'ara';
  }
  return prefix;
}

function readRedisChannels(r: EnvReader): string[] {
  const value = r.value('REDIS_CHANNELS');
  if (value === undefined) return [...DEFAULT_REDIS_CHANNELS];

  const channels = splitList(value);
  if (channels.length === 0) {
    r.problem('REDIS_CHANNELS', `REDIS_CHANNELS must list at least one channel (got ${shown(value)})`);
    return [...DEFAULT_REDIS_CHANNELS];
  }
  return channels;
}

function readDatabase(r: EnvReader): Config['database'] {
  return {
    url: r.serviceUrl('DATABASE_URL', ['postgres:', 'postgresql:']),
    poolSize: r.whole('DATABASE_POOL_SIZE', 10, POOL_SIZE),
  };
}

function readWebsocket(r: EnvReader): Config['websocket'] {
  return {
    heartbeatIntervalMs: r.seconds('WEBSOCKET_HEARTBEAT_INTERVAL', 30),
    connectionTimeoutMs: r.seconds('WEBSOCKET_CONNECTION_TIMEOUT', 120),
    cleanupIntervalMs: r.seconds('WEBSOCKET_CLEANUP_INTERVAL', 60),
    maxConnections: r.whole('WEBSOCKET_MAX_CONNECTIONS', 10_000, CAP),
    maxConnectionsPerUser: r.whole('WEBSOCKET_MAX_CONNECTIONS_PER_USER', 5, CAP),
    maxSubscriptionsPerConnection: r.whole('WEBSOCKET_MAX_SUBSCRIPTIONS_PER_CONNECTION', 50, CAP),
    maxMessageBytes: r.whole('WEBSOCKET_MAX_MESSAGE_BYTES', 65_536, BUFFER_BYTES),
    maxBufferedBytes: r.whole('WEBSOCKET_MAX_BUFFERED_BYTES', 1_048_576, BUFFER_BYTES),
    compression: r.flag('WEBSOCKET_COMPRESSION', false),
  };
}

function readRateLimit(r: EnvReader): Config['rateLimit'] {
  return {
    enabled: r.flag('RATELIMIT_ENABLED', false),
    backend: r.choice('RATELIMIT_BACKEND', ['local', 'redis'] as const, 'local'),
    httpRequestsPerSecond: r.whole('RATELIMIT_HTTP_REQUESTS_PER_SECOND', 100, POSITIVE_COUNT),
    httpBurstSize: r.whole('RATELIMIT_HTTP_BURST_SIZE', 200, POSITIVE_COUNT),
    wsConnectionsPerMinute: r.whole('RATELIMIT_WS_CONNECTIONS_PER_MINUTE', 10, POSITIVE_COUNT),
    wsMessagesPerSecond: r.whole('RATELIMIT_WS_MESSAGES_PER_SECOND', 50, POSITIVE_COUNT),
  };
}

/**
 * Stores default to memory on one node and to Redis in a cluster, where
 * every node must see the same queue, acks and templates.
 */
function defaultStoreBackend(r: EnvReader): StoreBackend {
  const cluster = r.value('CLUSTER_ENABLED')?.trim().toLowerCase() ?? '';
  return ['true', '1', 'yes', 'on'].includes(cluster) ? 'redis' : 'memory';
}

function readQueue(r: EnvReader): Config['queue'] {
  return {
    enabled: r.flag('QUEUE_ENABLED', false),
    backend: r.choice('QUEUE_BACKEND', STORE_BACKENDS, defaultStoreBackend(r)),
    maxSizePerUser: r.whole('QUEUE_MAX_SIZE_PER_USER', 100, POSITIVE_COUNT),
    messageTtlMs: r.seconds('QUEUE_MESSAGE_TTL_SECONDS', 3600, QUEUE_TTL_MAX_SECONDS),
    cleanupIntervalMs: r.seconds('QUEUE_CLEANUP_INTERVAL_SECONDS', 300),
    historyChannelMaxSize: r.whole('HISTORY_CHANNEL_MAX_SIZE', 100, POSITIVE_COUNT),
  };
}

function readAck(r: EnvReader): Config['ack'] {
  return {
    enabled: r.flag('ACK_ENABLED', false),
    backend: r.choice('ACK_BACKEND', STORE_BACKENDS, defaultStoreBackend(r)),
    timeoutMs: r.seconds('ACK_TIMEOUT_SECONDS', 30),
    cleanupIntervalMs: r.seconds('ACK_CLEANUP_INTERVAL_SECONDS', 60),
    redeliver: r.flag('ACK_REDELIVER', false),
  };
}

function readCluster(r: EnvReader): Config['cluster'] {
  return {
    enabled: r.flag('CLUSTER_ENABLED', false),
    serverId: readServerId(r),
    sessionTtlMs: r.seconds('CLUSTER_SESSION_TTL_SECONDS', 60),
  };
}

/** The node id goes into Redis keys and channel names, so it is kept to a safe alphabet. */
function readServerId(r: EnvReader): string {
  const value = r.value('CLUSTER_SERVER_ID');
  if (value === undefined) return `ara-${randomBytes(16).toString('hex')}`;
  if (SERVER_ID.test(value)) return value;

  r.problem('CLUSTER_SERVER_ID',
    `CLUSTER_SERVER_ID must be 1-128 characters of A-Z a-z 0-9 . _ : - (got ${shown(value)})`);
  return value;
}

function readOtel(r: EnvReader): Config['otel'] {
  return {
    enabled: r.flag('OTEL_ENABLED', false),
    endpoint: r.httpUrl('OTEL_ENDPOINT') ?? 'http://localhost:4317',
    serviceName: r.text('OTEL_SERVICE_NAME', 'ara-notification-service'),
    samplingRatio: r.decimal('OTEL_SAMPLING_RATIO', 1.0, 0, 1),
  };
}

// ---------------------------------------------------------------------------
// Rules that involve several variables

function checkTimings(r: EnvReader, config: Config): void {
  const { heartbeatIntervalMs, connectionTimeoutMs } = config.websocket;
  const heartbeatValid = r.isValid('WEBSOCKET_HEARTBEAT_INTERVAL');

  if (heartbeatValid && r.isValid('WEBSOCKET_CONNECTION_TIMEOUT')
    && connectionTimeoutMs <= heartbeatIntervalMs) {
    r.problem('WEBSOCKET_CONNECTION_TIMEOUT',
      `WEBSOCKET_CONNECTION_TIMEOUT (${connectionTimeoutMs / 1000}) must be greater than `
      + `WEBSOCKET_HEARTBEAT_INTERVAL (${heartbeatIntervalMs / 1000})`);
  }

  const { enabled, sessionTtlMs } = config.cluster;
  if (enabled && heartbeatValid && r.isValid('CLUSTER_SESSION_TTL_SECONDS')
    && sessionTtlMs <= heartbeatIntervalMs) {
    r.problem('CLUSTER_SESSION_TTL_SECONDS', `CLUSTER_SESSION_TTL_SECONDS (${sessionTtlMs / 1000}) `
      + `must be greater than WEBSOCKET_HEARTBEAT_INTERVAL (${heartbeatIntervalMs / 1000})`);
  }

  const { initialDelayMs, maxDelayMs } = config.redis.backoff;
  if (maxDelayMs < initialDelayMs) {
    r.problem('REDIS_BACKOFF_MAX_DELAY_MS', `REDIS_BACKOFF_MAX_DELAY_MS (${maxDelayMs}) must be at `
      + `least REDIS_BACKOFF_INITIAL_DELAY_MS (${initialDelayMs})`);
  }
}

/** A backend that is actually used needs its server; an unused one is not checked. */
function checkBackendServers(r: EnvReader, config: Config): void {
  const uses: [string, boolean, string][] = [
    ['QUEUE_BACKEND', config.queue.enabled, config.queue.backend],
    ['ACK_BACKEND', config.ack.enabled, config.ack.backend],
    ['TEMPLATE_BACKEND', true, config.templates.backend],
    ['RATELIMIT_BACKEND', config.rateLimit.enabled, config.rateLimit.backend],
  ];
  for (const [name, inUse, backend] of uses) {
    if (inUse && backend === 'redis' && config.redis.url === undefined) {
      r.problem(name, `${name}=redis requires REDIS_URL`);
    }
    if (inUse && backend === 'postgres' && config.database.url === undefined) {
      r.problem(name, `${name}=postgres requires DATABASE_URL`);
    }
  }

  if (config.cluster.enabled && config.redis.url === undefined) {
    r.problem('CLUSTER_ENABLED', 'CLUSTER_ENABLED=true requires REDIS_URL');
  }
  checkClusterBackends(r, config);
  if (config.redis.triggerEnabled && config.redis.url === undefined) {
    r.problem('REDIS_TRIGGER_ENABLED', 'REDIS_TRIGGER_ENABLED=true requires REDIS_URL');
  }
}

/**
 * In a cluster the online/offline decision and the queue append happen in
 * one Redis script, and any node may receive a user's ack or render a
 * template: those stores cannot be per node.
 */
function checkClusterBackends(r: EnvReader, config: Config): void {
  if (!config.cluster.enabled) return;
  if (config.queue.enabled && config.queue.backend !== 'redis') {
    r.problem('QUEUE_BACKEND', `CLUSTER_ENABLED with QUEUE_ENABLED requires QUEUE_BACKEND=redis (got ${config.queue.backend})`);
  }
  if (config.ack.enabled && config.ack.backend === 'memory') {
    r.problem('ACK_BACKEND', 'CLUSTER_ENABLED with ACK_ENABLED requires ACK_BACKEND=redis or postgres');
  }
  if (config.templates.backend === 'memory') {
    r.problem('TEMPLATE_BACKEND', 'CLUSTER_ENABLED requires TEMPLATE_BACKEND=redis or postgres');
  }
}

function warnAboutTenancy(r: EnvReader, config: Config): void {
  const { enabled, tenants, envOverrides } = config.tenancy;
  if (!enabled && config.api.tenantKeys.size > 0) {
    // With tenancy off every request acts in tenant "default", which holds
    // every connection: a key meant for one tenant would reach them all.
    r.problem('TENANT_API_KEYS', 'Tenant API keys (TENANT_API_KEYS or TENANTS_FILE) require TENANT_ENABLED=true');
  } else if (!enabled && (tenants.length > 0 || envOverrides.size > 0)) {
    r.warn('TENANTS_FILE or TENANT_<ID>_ limits are set but TENANT_ENABLED is false: '
      + 'everything lives in tenant "default"');
  }
  warnSharedEnvKeys(r, tenants);
}

// ---------------------------------------------------------------------------
// Entry points

/**
 * Reads, types and validates every variable of SPEC §1. Returns the settings
 * with warnings worth one log line each, or every problem found.
 */
export function parseConfig(env: Env, options: ParseOptions = {}): ConfigResult {
  const readFile = options.readFile ?? readUtf8;
  const r = new EnvReader(env);
  const production = isProductionMode(env.RUN_MODE);

  const tenants = readTenantsFile(r, production, readFile);
  const tenantKeys = readTenantApiKeys(r, production);
  for (const tenant of tenants) {
    for (const digest of tenant.apiKeySha256) addDigest(tenantKeys, tenant.id, digest);
  }
  checkKeyOwnership(r, tenantKeys);
  const tenantKeysSet = tenantKeys.size > 0 || r.isSet('TENANT_API_KEYS');

  const config: Config = {
    production,
    server: readServer(r),
    log: readLog(r, production),
    jwt: readJwt(r, production, readFile),
    api: readApi(r, production, tenantKeys, tenantKeysSet),
    tenancy: readTenancy(r, tenants),
    corsOrigins: readCorsOrigins(r, production),
    redis: readRedis(r),
    database: readDatabase(r),
    websocket: readWebsocket(r),
    rateLimit: readRateLimit(r),
    queue: readQueue(r),
    ack: readAck(r),
    templates: { backend: r.choice('TEMPLATE_BACKEND', STORE_BACKENDS, defaultStoreBackend(r)) },
    cluster: readCluster(r),
    otel: readOtel(r),
    metricsToken: r.raw('METRICS_TOKEN'),
    shutdownGraceMs: r.seconds('SHUTDOWN_GRACE_SECONDS', 10),
  };

  checkTimings(r, config);
  checkBackendServers(r, config);
  warnAboutTenancy(r, config);
  if (config.ack.redeliver && !(config.ack.enabled && config.queue.enabled)) {
    r.warn('ACK_REDELIVER has no effect unless ACK_ENABLED and QUEUE_ENABLED are both true');
  }
  if (production && config.metricsToken === undefined) {
    r.warn('METRICS_TOKEN is not set: /metrics is readable by anyone who can reach the port');
  }

  if (r.problems.length > 0) return { ok: false, problems: r.problems };
  return { ok: true, config, warnings: r.warnings };
}

/**
 * Loads `<cwd>/.env` into `env` without overwriting: a variable already
 * present in the real environment wins (SPEC §1). A missing file is normal;
 * any other read error is thrown, since the operator meant that file to count.
 */
export function loadDotEnv(cwd: string, env: NodeJS.ProcessEnv): void {
  let text: string;
  try {
    text = readFileSync(join(cwd, '.env'), 'utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return;
    throw error;
  }

  for (const [name, value] of Object.entries(parseEnv(text))) {
    if (env[name] === undefined && value !== undefined) env[name] = value;
  }
}
