/**
 * HTTP API keys (SPEC §2, §3). Keys are compared as SHA-256 digests with a
 * constant-time comparison, so neither a key's bytes nor its length can be
 * learned from response timing (case C05). Tenant keys are stored only as
 * digests; a lookup by digest reveals nothing an attacker can steer.
 */
import { hash, timingSafeEqual } from 'node:crypto';

export type Caller =
  | { kind: 'operator' }
  | { kind: 'tenant'; tenantId: string };

export function sha256Hex(value: string): string {
  return hash('sha256', value, 'hex');
}

/** The raw SHA-256 of a secret, for constant-time comparison of fixed-length digests. */
export function sha256(value: string): Buffer {
  return hash('sha256', value, 'buffer') as unknown as Buffer;
}

export class ApiKeyAuthority {
  readonly #operatorDigest: Buffer | null;
  /** sha256 hex → tenant id. */
  readonly #tenantByDigest = new Map<string, string>();

  constructor(operatorKey: string | undefined, tenantKeys: ReadonlyMap<string, readonly string[]>) {
    this.#operatorDigest = operatorKey ? sha256(operatorKey) : null;
    for (const [tenantId, digests] of tenantKeys) {
      for (const digest of digests) this.#tenantByDigest.set(digest.toLowerCase(), tenantId);
    }
  }

  /** The caller a presented key belongs to, or null for a wrong or missing key. */
  identify(presented: string | undefined): Caller | null {
    if (presented === undefined || presented.length === 0 || presented.length > 1024) return null;
    const digest = sha256(presented);
    if (this.#operatorDigest && timingSafeEqual(digest, this.#operatorDigest)) {
      return { kind: 'operator' };
    }
    const tenantId = this.#tenantByDigest.get(digest.toString('hex'));
    return tenantId === undefined ? null : { kind: 'tenant', tenantId };
  }
}
