/**
 * Turns the content fields of a send (SPEC §6.1) into what the dispatcher
 * delivers: either the inline `event_type` + `payload`, or a stored
 * template rendered with `variables`.
 */
import { ApiError } from '../errors.js';
import type { Priority } from '../hub/outbound.js';
import type { Audience, NotificationContent } from './notification.js';

export interface StoredTemplate {
  id: string;
  name: string;
  eventType: string;
  payloadTemplate: unknown;
  defaultPriority: Priority;
  defaultTtl?: number;
  description?: string;
  createdAt: string;
  updatedAt: string;
}

/** Read access to one tenant's templates, as sends need it. */
export interface TemplateLookup {
  get(tenantId: string, id: string): Promise<StoredTemplate | undefined>;
  render(template: StoredTemplate, variables: Record<string, unknown>): unknown;
}

export interface ContentRequest {
  event_type?: string;
  payload?: unknown;
  template_id?: string;
  variables?: Record<string, unknown>;
  priority?: Priority;
  ttl?: number;
  correlation_id?: string;
}

export async function resolveContent(
  request: ContentRequest,
  tenantId: string,
  templates: TemplateLookup | null,
  audience?: Audience,
): Promise<NotificationContent> {
  const content =
    request.template_id !== undefined
      ? await fromTemplate(request, tenantId, templates)
      : inline(request);
  if (request.correlation_id !== undefined) content.correlationId = request.correlation_id;
  if (audience !== undefined) content.audience = audience;
  return content;
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
  templates: TemplateLookup | null,
): Promise<NotificationContent> {
  const id = request.template_id!;
  const template = templates ? await templates.get(tenantId, id) : undefined;
  if (!template || !templates) throw new ApiError('TEMPLATE_NOT_FOUND', `Template '${id}' not found`);
  const content: NotificationContent = {
    eventType: template.eventType,
    payload: templates.render(template, request.variables ?? {}),
    priority: request.priority ?? template.defaultPriority,
  };
  const ttl = request.ttl ?? template.defaultTtl;
  if (ttl !== undefined) content.ttl = ttl;
  return content;
}
