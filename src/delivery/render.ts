/**
 * Template rendering (SPEC §6.2):
 * - `{{ name }}` and `{{ a.b.c }}`, whitespace inside the braces allowed;
 * - a string that is exactly one placeholder becomes the variable's JSON
 *   value (a number stays a number, an object stays an object);
 * - inside a longer string the value is inserted as text (strings as they
 *   are, anything else as compact JSON);
 * - one pass: text that a value brings in is never expanded again;
 * - a missing variable is an error naming it.
 * Object keys are left as written. Only own properties are looked up, so
 * `{{constructor}}` or `{{__proto__}}` find nothing inherited.
 */

const PLACEHOLDER = /\{\{\s*([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\s*\}\}/g;
const WHOLE_PLACEHOLDER = /^\{\{\s*([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\s*\}\}$/;

/** Deepest nesting a stored payload template may have. */
export const MAX_TEMPLATE_DEPTH = 32;

export class MissingVariableError extends Error {
  constructor(readonly variable: string) {
    super(`missing variable "${variable}"`);
    this.name = 'MissingVariableError';
  }
}

export function renderTemplate(template: unknown, variables: Record<string, unknown>): unknown {
  if (typeof template === 'string') return renderString(template, variables);
  if (Array.isArray(template)) return template.map((item) => renderTemplate(item, variables));
  if (template !== null && typeof template === 'object') {
    return Object.fromEntries(
      Object.entries(template).map(([key, value]) => [key, renderTemplate(value, variables)]),
    );
  }
  return template;
}

/** How deeply a value nests; counting stops just past MAX_TEMPLATE_DEPTH. */
export function templateDepth(value: unknown, depth = 0): number {
  if (depth > MAX_TEMPLATE_DEPTH || value === null || typeof value !== 'object') return depth;
  let deepest = depth;
  for (const child of Object.values(value)) deepest = Math.max(deepest, templateDepth(child, depth + 1));
  return deepest;
}

function renderString(text: string, variables: Record<string, unknown>): unknown {
  const whole = WHOLE_PLACEHOLDER.exec(text);
  if (whole) return lookup(variables, whole[1]!);
  return text.replace(PLACEHOLDER, (_match, path: string) => asText(lookup(variables, path)));
}

function lookup(variables: Record<string, unknown>, path: string): unknown {
  let value: unknown = variables;
  for (const segment of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, segment)) {
      throw new MissingVariableError(path);
    }
    value = (value as Record<string, unknown>)[segment];
  }
  return value;
}

function asText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}
