/**
 * Realtime authentication (SPEC §2): verifies a JWT with the one configured
 * algorithm and turns its claims into the identity of a connection.
 *
 * Every failure is an AuthError whose `reason` is for the log only; clients
 * are told "Invalid token" and nothing more.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import { checkRegisteredClaims, isHmacAlgorithm, verifyHmacJwt, type HmacAlgorithm } from './hmac-jwt.js';
import type { Config, JwtAlgorithm, TenantJwt } from '../config/types.js';
import { DEFAULT_TENANT, isValidTenantId } from '../tenancy/tenant-id.js';

/** Who a verified token speaks for. */
export interface Identity {
  userId: string;
  tenantId: string;
  roles: readonly string[];
  /** JWT `channels` claim; null = any channel of the tenant. */
  permittedChannels: readonly string[] | null;
  /** Expiry in epoch milliseconds (leeway not included). */
  expiresAtMs: number;
}

export class AuthError extends Error {
  constructor(readonly reason: string) {
    super('Invalid token');
    this.name = 'AuthError';
  }
}

/** Longest token we even try to verify; real tokens are far shorter. */
export const MAX_TOKEN_LENGTH = 8192;
const MAX_SUB_LENGTH = 256;
/** One shared empty list for the many tokens without `roles`. */
const NO_ROLES: readonly string[] = Object.freeze([]);
const ASYMMETRIC: JwtAlgorithm[] = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'EdDSA'];

/** How one key verifies: the key (or JWKS getter) and the algorithms it accepts. */
interface VerificationKey {
  key: Uint8Array | KeyObject | ReturnType<typeof createRemoteJWKSet>;
  algorithms: JwtAlgorithm[];
}

/**
 * Verifies tokens with the global key, or, for a tenant configured with
 * its own key (TENANTS_FILE `jwt`), with that key only: the token's
 * unverified `tenant_id` merely selects which configured key to try, and
 * the global key never opens such a tenant (SPEC §1, §3).
 */
export class TokenVerifier {
  readonly #globalKey: VerificationKey | null;
  readonly #tenantKeys = new Map<string, VerificationKey>();
  readonly #issuer: string | undefined;
  readonly #audience: string | undefined;
  readonly #leewaySeconds: number;
  readonly #tenancyEnabled: boolean;

  constructor(config: Config) {
    this.#globalKey = globalKey(config);
    this.#issuer = config.jwt.issuer;
    this.#audience = config.jwt.audience;
    this.#leewaySeconds = config.jwt.leewaySeconds;
    this.#tenancyEnabled = config.tenancy.enabled;
    if (this.#tenancyEnabled) {
      for (const tenant of config.tenancy.tenants) {
        if (tenant.jwt) this.#tenantKeys.set(tenant.id, tenantKey(tenant.jwt));
      }
    }
  }

  async verify(token: string): Promise<Identity> {
    const key = this.#keyFor(token);
    return this.#verifyHmacKey(token, key) ?? this.#identityFrom(await this.#verifyWithJose(token, key));
  }

  /**
   * Verifies at once when the token's key is one HMAC algorithm (no I/O,
   * no WebCrypto: the connect path's case, which then needs no promise);
   * undefined when only `verify` can tell (asymmetric keys, JWKS). Throws
   * AuthError as `verify` rejects with it.
   */
  verifyNow(token: string): Identity | undefined {
    return this.#verifyHmacKey(token, this.#keyFor(token));
  }

  #keyFor(token: string): VerificationKey {
    if (token.length === 0) throw new AuthError('empty token');
    if (token.length > MAX_TOKEN_LENGTH) throw new AuthError('token too long');
    const claimedTenant = this.#unverifiedTenant(token);
    const key = (claimedTenant && this.#tenantKeys.get(claimedTenant)) || this.#globalKey;
    if (key === null) throw new AuthError('no verification key is configured for this token');
    return key;
  }

  #verifyHmacKey(token: string, key: VerificationKey): Identity | undefined {
    const [algorithm] = key.algorithms;
    if (key.algorithms.length !== 1 || algorithm === undefined || !isHmacAlgorithm(algorithm)) return undefined;
    return this.#identityFrom(this.#verifyHmac(token, algorithm, key));
  }

  /** The tenant the token names, read without trusting it; only to pick a key. */
  #unverifiedTenant(token: string): string | null {
    if (!this.#tenancyEnabled || this.#tenantKeys.size === 0) return null;
    try {
      const tenantId = decodeJwt(token).tenant_id;
      return isValidTenantId(tenantId) ? tenantId : null;
    } catch {
      throw new AuthError('token is not a well-formed JWT');
    }
  }

  #verifyHmac(token: string, algorithm: HmacAlgorithm, key: VerificationKey): JWTPayload {
    try {
      const payload = verifyHmacJwt(token, algorithm, key.key as Uint8Array);
      checkRegisteredClaims(payload, { leewaySeconds: this.#leewaySeconds, issuer: this.#issuer, audience: this.#audience });
      return payload;
    } catch (error) {
      throw new AuthError((error as Error).message);
    }
  }

  async #verifyWithJose(token: string, key: VerificationKey): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, key.key as Uint8Array, {
        algorithms: key.algorithms,
        issuer: this.#issuer,
        audience: this.#audience,
        clockTolerance: this.#leewaySeconds,
        requiredClaims: ['exp', 'sub'],
      });
      return payload;
    } catch (error) {
      const code = (error as { code?: string }).code ?? 'ERR_JWT_INVALID';
      throw new AuthError(`${code}: ${(error as Error).message}`);
    }
  }

  #identityFrom(payload: JWTPayload): Identity {
    const { sub, exp } = payload;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > MAX_SUB_LENGTH) {
      throw new AuthError('sub must be a non-empty string of at most 256 characters');
    }
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new AuthError('exp must be a number');
    return {
      userId: sub,
      tenantId: this.#tenantFrom(payload.tenant_id),
      roles: stringArrayClaim(payload.roles, 'roles') ?? NO_ROLES,
      permittedChannels: stringArrayClaim(payload.channels, 'channels'),
      expiresAtMs: exp * 1000,
    };
  }

  #tenantFrom(claim: unknown): string {
    // With tenancy off every connection lives in `default` and the claim is
    // ignored entirely (SPEC §3).
    if (!this.#tenancyEnabled || claim === undefined || claim === null) return DEFAULT_TENANT;
    if (!isValidTenantId(claim)) throw new AuthError('tenant_id is not a valid tenant id');
    return claim;
  }
}

function stringArrayClaim(value: unknown, name: string): string[] | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value) || value.length > 1000 || !value.every((v) => typeof v === 'string')) {
    throw new AuthError(`${name} must be an array of strings`);
  }
  return value as string[];
}

function globalKey(config: Config): VerificationKey | null {
  const { algorithm, secret, publicKey, jwksUrl } = config.jwt;
  if (algorithm.startsWith('HS')) {
    return secret ? { key: new TextEncoder().encode(secret), algorithms: [algorithm] } : null;
  }
  if (publicKey) return { key: createPublicKey(publicKey), algorithms: [algorithm] };
  if (jwksUrl) return { key: remoteKeySet(jwksUrl), algorithms: [algorithm] };
  return null;
}

function tenantKey(jwt: TenantJwt): VerificationKey {
  if ('jwksUrl' in jwt) return { key: remoteKeySet(jwt.jwksUrl), algorithms: ASYMMETRIC };
  if ('secret' in jwt) return { key: new TextEncoder().encode(jwt.secret), algorithms: [jwt.algorithm] };
  return { key: createPublicKey(jwt.publicKey), algorithms: [jwt.algorithm] };
}

/**
 * A JWKS endpoint, cached; jose refetches it when a token names an unknown
 * `kid`, at most once per cooldown, so tokens cannot make us hammer it.
 * Only configured URLs are ever fetched: `jku`/`x5u` headers are ignored.
 */
function remoteKeySet(url: string): ReturnType<typeof createRemoteJWKSet> {
  return createRemoteJWKSet(new URL(url), { cooldownDuration: 30_000, cacheMaxAge: 600_000, timeoutDuration: 5000 });
}

export interface TokenClaims {
  sub: string;
  tenantId?: string;
  ttlSeconds?: number;
  roles?: string[];
  channels?: string[];
}

/**
 * Signs a token with the configured HMAC secret: the CLI's `token` command
 * and the development start-up hint. Asymmetric setups sign elsewhere.
 */
export async function signToken(config: Config, claims: TokenClaims): Promise<string> {
  const { algorithm, secret, issuer, audience } = config.jwt;
  if (!algorithm.startsWith('HS') || !secret) {
    throw new Error(`tokens can only be signed here with an HS* algorithm and JWT_SECRET (configured: ${algorithm})`);
  }
  const body: JWTPayload = {};
  if (claims.tenantId !== undefined) body.tenant_id = claims.tenantId;
  if (claims.roles !== undefined) body.roles = claims.roles;
  if (claims.channels !== undefined) body.channels = claims.channels;
  const jwt = new SignJWT(body)
    .setProtectedHeader({ alg: algorithm, typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuedAt()
    .setExpirationTime(`${claims.ttlSeconds ?? 3600}s`);
  if (issuer) jwt.setIssuer(issuer);
  if (audience) jwt.setAudience(audience);
  return jwt.sign(new TextEncoder().encode(secret));
}
