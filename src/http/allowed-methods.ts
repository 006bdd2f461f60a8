/**
 * Which methods each registered route pattern answers, so an unknown
 * method on a known path is a 405 with `Allow` rather than a 404 (SPEC §6).
 */
interface RoutePattern {
  regex: RegExp;
  methods: Set<string>;
}

export class AllowedMethods {
  readonly #patterns = new Map<string, RoutePattern>();

  add(method: string | string[], url: string): void {
    let pattern = this.#patterns.get(url);
    if (!pattern) {
      pattern = { regex: patternRegex(url), methods: new Set() };
      this.#patterns.set(url, pattern);
    }
    for (const one of Array.isArray(method) ? method : [method]) pattern.methods.add(one);
  }

  forPath(path: string): string[] {
    const methods = new Set<string>();
    for (const pattern of this.#patterns.values()) {
      if (pattern.regex.test(path)) for (const method of pattern.methods) methods.add(method);
    }
    return [...methods].sort();
  }
}

/** `/api/v1/channels/:name` → a regex where each `:param` is one segment. */
function patternRegex(url: string): RegExp {
  const escaped = url
    .split('/')
    .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${escaped}/?$`);
}
