/** The embedded template store: lost on restart, not shared between nodes. */
import type { TemplateRecord, TemplateStore } from '../types.js';

export class MemoryTemplateStore implements TemplateStore {
  readonly backend = 'memory' as const;
  readonly #templates = new Map<string, Map<string, TemplateRecord>>();

  async create(tenantId: string, template: TemplateRecord) {
    let tenant = this.#templates.get(tenantId);
    if (!tenant) this.#templates.set(tenantId, (tenant = new Map()));
    if (tenant.has(template.id)) return false;
    tenant.set(template.id, structuredClone(template));
    return true;
  }

  async get(tenantId: string, id: string) {
    const template = this.#templates.get(tenantId)?.get(id);
    return template && structuredClone(template);
  }

  async list(tenantId: string) {
    const tenant = this.#templates.get(tenantId);
    return tenant ? [...tenant.values()].map((t) => structuredClone(t)).sort(byId) : [];
  }

  async replace(tenantId: string, template: TemplateRecord) {
    const tenant = this.#templates.get(tenantId);
    if (!tenant?.has(template.id)) return false;
    tenant.set(template.id, structuredClone(template));
    return true;
  }

  async delete(tenantId: string, id: string) {
    const tenant = this.#templates.get(tenantId);
    const deleted = tenant?.delete(id) ?? false;
    if (tenant?.size === 0) this.#templates.delete(tenantId);
    return deleted;
  }

  async close() {}
}

function byId(a: TemplateRecord, b: TemplateRecord): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
