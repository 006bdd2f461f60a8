/**
 * RFC 3339 UTC timestamps as Date#toISOString writes them, for epoch
 * milliseconds. The last one is remembered: under load many sends fall in
 * the same millisecond, and formatting a Date costs about a microsecond,
 * a measurable share of an HTTP send.
 */
let lastMs = Number.NaN;
let lastIso = '';

export function isoTime(epochMs: number): string {
  if (epochMs !== lastMs) {
    lastIso = new Date(epochMs).toISOString();
    lastMs = epochMs;
  }
  return lastIso;
}
