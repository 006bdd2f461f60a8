/**
 * Turns the content fields of a send (SPEC §6.1) into what the dispatcher
 * delivers: either the inline `event_type` + `payload`, or a stored
 * template rendered with `variables`.
 */
import { ApiError } from '../errors.js';
import type { Priority } from '../hub/outbound.js';
import type { TemplateStore } from '../storage/types.js';
import type { Audience, NotificationContent } from './notification.js';
import { MissingVariableError, renderTemplate } from './render.js';

export interface ContentRequest {
  event_type?: string;
  payload?: unknown;
  template_id?: string;
  variables?: Record<string, unknown>;
  priority?: Priority;
  ttl?: number;
  correlation_id?: string;
}

/**
 * Inline content is resolved synchronously and template content with one
 * store read: the common inline send then waits on nothing (no promise,
 * no microtask), which counts on the HTTP path.
 */
export function resolveContent(
  request: ContentRequest,
  tenantId: string,
  templates: TemplateStore,
  audience?: Audience,
): NotificationContent | Promise<NotificationContent> {
  if (request.template_id === undefined) return finished(inline(request), request, audience);
  return fromTemplate(request, tenantId, templates).then((content) => finished(content, request, audience));
}

function finished(content: NotificationContent, request: ContentRequest, audience: Audience | undefined): NotificationContent {
  if (request.correlation_id !== undefined) content.correlationId = request.correlation_id;
  if (audience !== undefined) content.audience = audience;
  checkPayloadDepth(content.payload, request.template_id !== undefined ? 'variables' : 'payload');
  return content;
}

/**
 * Deepest nesting a notification payload may have (the limit Ara 1.0's JSON
 * parser had). Deeper values could not be serialised without exhausting
 * the stack, which answered 500 instead of a client error.
 */
export const MAX_PAYLOAD_DEPTH = 128;

function checkPayloadDepth(payload: unknown, field: string): void {
  if (depthBeyond(payload, MAX_PAYLOAD_DEPTH)) {
    throw new ApiError('VALIDATION_ERROR', `${field} nests too deeply`, {
      details: [{ path: field, message: `must not nest deeper than ${MAX_PAYLOAD_DEPTH} levels` }],
    });
  }
}

/** True when `value` nests deeper than `limit`; walks no deeper than that. */
function depthBeyond(value: unknown, limit: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (limit === 0) return true;
  for (const child of Object.values(value)) if (depthBeyond(child, limit - 1)) return true;
  return false;
}

function inline(request: ContentRequest): NotificationContent {
  if (request.event_type === undefined) {
    throw new ApiError('VALIDATION_ERROR', 'Either event_type with payload, or template_id, is required', {
      details: [{ path: 'event_type', message: 'is required when template_id is absent' }],
    });
  }
  if (!('payload' in request)) {
    throw new ApiError('VALIDATION_ERROR', 'payload is required with event_type', {
      details: [{ path: 'payload', message: 'is required with event_type' }],
    });
  }
  const content: NotificationContent = {
    eventType: request.event_type,
    payload: request.payload,
    priority: request.priority ?? 'Normal',
  };
  if (request.ttl !== undefined) content.ttl = request.ttl;
  return content;
}

async function fromTemplate(
  request: ContentRequest,
  tenantId: string,
  templates: TemplateStore,
): Promise<NotificationContent> {
  const id = request.template_id!;
  const template = await templates.get(tenantId, id);
  if (!template) throw new ApiError('TEMPLATE_NOT_FOUND', `Template '${id}' not found`);
  const content: NotificationContent = {
    eventType: template.event_type,
    payload: rendered(template.payload_template, request.variables ?? {}),
    priority: request.priority ?? template.default_priority,
  };
  const ttl = request.ttl ?? template.default_ttl;
  if (ttl !== undefined) content.ttl = ttl;
  return content;
}

function rendered(payloadTemplate: unknown, variables: Record<string, unknown>): unknown {
  try {
    return renderTemplate(payloadTemplate, variables);
  } catch (error) {
    if (!(error instanceof MissingVariableError)) throw error;
    throw new ApiError('VALIDATION_ERROR', `Template variable "${error.variable}" is missing`, {
      details: [{ path: `variables.${error.variable}`, message: 'is used by the template but was not given' }],
    });
  }
}
