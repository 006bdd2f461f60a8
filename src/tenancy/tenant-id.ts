/** Tenant ids (SPEC §3): 1–64 characters of `A-Z a-z 0-9 . _ -`. */
const TENANT_ID = /^[A-Za-z0-9._-]{1,64}$/;

export const DEFAULT_TENANT = 'default';

export function isValidTenantId(value: unknown): value is string {
  return typeof value === 'string' && TENANT_ID.test(value);
}
