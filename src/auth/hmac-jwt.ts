/**
 * Verification of HMAC-signed JWTs (HS256/384/512) with node:crypto,
 * synchronously: the connect path's hottest step. jose verifies through
 * WebCrypto, whose asynchronous round trip costs more than the HMAC itself.
 * This module checks only the compact form and the signature; the claims
 * are checked by `checkTimes` here and by the TokenVerifier, exactly as
 * for tokens jose verifies (the same regression cases C01–C03 run on both).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { JWTPayload } from 'jose';

const HASH_OF = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' } as const;
/** Three unpadded base64url segments and nothing else: no lenient decoding of odd characters. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
export type HmacAlgorithm = keyof typeof HASH_OF;

export function isHmacAlgorithm(algorithm: string): algorithm is HmacAlgorithm {
  return algorithm in HASH_OF;
}

/** Returns the payload of a token whose header names `algorithm` and whose signature `secret` made; else throws. */
export function verifyHmacJwt(token: string, algorithm: HmacAlgorithm, secret: Uint8Array): JWTPayload {
  if (!COMPACT_JWS.test(token)) throw new Error('ERR_JWS_INVALID: not a compact JWS');
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  checkHeader(token.slice(0, first), algorithm);
  const expected = createHmac(HASH_OF[algorithm], secret).update(token.slice(0, second)).digest();
  const signature = Buffer.from(token.slice(second + 1), 'base64url');
  if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) {
    throw new Error('ERR_JWS_SIGNATURE_VERIFICATION_FAILED: signature verification failed');
  }
  return parseSegment(token.slice(first + 1, second), 'payload') as JWTPayload;
}

/**
 * The last header segment that passed checkHeader, with its algorithm.
 * Tokens from one issuer carry the same header byte for byte, so most
 * connects skip decoding it; the check is a pure function of the segment,
 * so remembering one accepted segment changes no outcome.
 */
let acceptedHeader: { segment: string; algorithm: HmacAlgorithm } | null = null;

function checkHeader(segment: string, algorithm: HmacAlgorithm): void {
  if (acceptedHeader !== null && acceptedHeader.segment === segment && acceptedHeader.algorithm === algorithm) return;
  const header = parseSegment(segment, 'header');
  // Only the configured algorithm; `crit` extensions are not understood, so refused (RFC 7515 §4.1.11).
  if (header.alg !== algorithm) throw new Error('ERR_JOSE_ALG_NOT_ALLOWED: unexpected "alg"');
  if (header.crit !== undefined) throw new Error('ERR_JOSE_NOT_SUPPORTED: "crit" is not supported');
  acceptedHeader = { segment, algorithm };
}

/**
 * The registered claims jose checks, with the same rules: `exp` required
 * and numeric, expired when exp <= now - leeway; `nbf` in the future
 * beyond the leeway refused; `iat` numeric when present; `iss`/`aud` equal
 * (aud: any of an array) when configured.
 */
export function checkRegisteredClaims(
  payload: JWTPayload,
  options: { leewaySeconds: number; issuer: string | undefined; audience: string | undefined },
  nowSeconds = Math.floor(Date.now() / 1000),
): void {
  const { exp, nbf, iat, iss, aud } = payload;
  if (typeof exp !== 'number') throw new Error('ERR_JWT_CLAIM_VALIDATION_FAILED: "exp" claim must be a number');
  if (exp <= nowSeconds - options.leewaySeconds) throw new Error('ERR_JWT_EXPIRED: "exp" claim timestamp check failed');
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > nowSeconds + options.leewaySeconds)) {
    throw new Error('ERR_JWT_CLAIM_VALIDATION_FAILED: "nbf" claim timestamp check failed');
  }
  if (iat !== undefined && typeof iat !== 'number') throw new Error('ERR_JWT_CLAIM_VALIDATION_FAILED: "iat" claim must be a number');
  if (options.issuer !== undefined && iss !== options.issuer) {
    throw new Error('ERR_JWT_CLAIM_VALIDATION_FAILED: unexpected "iss" claim value');
  }
  if (options.audience !== undefined) {
    const audiences = Array.isArray(aud) ? aud : [aud];
    if (!audiences.includes(options.audience)) throw new Error('ERR_JWT_CLAIM_VALIDATION_FAILED: unexpected "aud" claim value');
  }
  if (payload.sub === undefined) throw new Error('ERR_JWT_CLAIM_VALIDATION_FAILED: missing required "sub" claim');
}

function parseSegment(segment: string, name: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new Error(`ERR_JWT_INVALID: ${name} is not base64url-encoded JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`ERR_JWT_INVALID: ${name} must be a JSON object`);
  return value as Record<string, unknown>;
}
