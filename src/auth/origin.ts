/**
 * Origin check for WS and SSE (SPEC §2), the defence against cross-site
 * WebSocket hijacking (case C06). Origins compare as the URL standard
 * serialises them: scheme and host lower-cased, default ports dropped.
 */
export class OriginPolicy {
  readonly #allowed: ReadonlySet<string>;

  /** `allowed` empty = any origin (development only; production requires a list). */
  constructor(allowed: readonly string[]) {
    this.#allowed = new Set(allowed.map((origin) => normaliseOrigin(origin) ?? origin));
  }

  get restricted(): boolean {
    return this.#allowed.size > 0;
  }

  /** Requests without Origin (servers, CLIs) are allowed. */
  allows(origin: string | undefined): boolean {
    if (origin === undefined || !this.restricted) return true;
    const normalised = normaliseOrigin(origin);
    return normalised !== null && this.#allowed.has(normalised);
  }
}

function normaliseOrigin(origin: string): string | null {
  try {
    const url = new URL(origin);
    // Opaque origins (`null`, `file://`) serialise as the string "null".
    return url.origin === 'null' ? null : url.origin;
  } catch {
    return null;
  }
}
