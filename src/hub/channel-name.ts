/**
 * Channel names (SPEC §4): 1–64 bytes of UTF-8 made of Unicode letters,
 * digits, `-`, `_` and `.`. Everything else — `:`, `*`, `/`, spaces,
 * control characters — is refused, so no name can look like a pattern, a
 * path or another tenant's namespace.
 */
const CHANNEL_CHARS = /^[\p{L}\p{N}._-]+$/u;
export const CHANNEL_NAME_MAX_BYTES = 64;

export function isValidChannelName(value: unknown): value is string {
  // More UTF-16 units than the byte cap means more bytes too: refuse early.
  if (typeof value !== 'string' || value.length === 0) return false;
  if (value.length > CHANNEL_NAME_MAX_BYTES) return false;
  return Buffer.byteLength(value, 'utf8') <= CHANNEL_NAME_MAX_BYTES && CHANNEL_CHARS.test(value);
}

/**
 * A JWT `channels` claim entry ending in `*` permits every channel that
 * starts with the part before it; any other entry permits exactly itself.
 */
export function isChannelPermitted(channel: string, permitted: readonly string[] | null): boolean {
  if (permitted === null) return true;
  for (const entry of permitted) {
    if (entry.endsWith('*')) {
      if (channel.startsWith(entry.slice(0, -1))) return true;
    } else if (entry === channel) {
      return true;
    }
  }
  return false;
}
