/**
 * Template management (SPEC §6.2), scoped to the caller's tenant: ids are
 * unique within a tenant and never carry a tenant prefix.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { MAX_TEMPLATE_DEPTH, templateDepth } from '../../delivery/render.js';
import { ApiError } from '../../errors.js';
import type { TemplateRecord, TemplateStore } from '../../storage/types.js';
import { tenantOf } from '../api-scope.js';
import { PrioritySchema } from '../schemas.js';

const TemplateId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.-]+$' });
const Ttl = Type.Integer({ minimum: 0, maximum: 4294967295 });
const Description = Type.String({ maxLength: 1024 });

const CreateBody = Type.Object({
  id: TemplateId,
  name: Type.String({ minLength: 1, maxLength: 256 }),
  event_type: Type.String({ minLength: 1, maxLength: 128 }),
  payload_template: Type.Unknown(),
  default_priority: Type.Optional(PrioritySchema),
  priority: Type.Optional(PrioritySchema),
  default_ttl: Type.Optional(Ttl),
  ttl: Type.Optional(Ttl),
  description: Type.Optional(Description),
});

/** PUT: every field optional; `null` clears an optional field. */
const UpdateBody = Type.Object({
  id: Type.Optional(TemplateId),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  event_type: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  payload_template: Type.Optional(Type.Unknown()),
  default_priority: Type.Optional(Type.Union([PrioritySchema, Type.Null()])),
  priority: Type.Optional(Type.Union([PrioritySchema, Type.Null()])),
  default_ttl: Type.Optional(Type.Union([Ttl, Type.Null()])),
  ttl: Type.Optional(Type.Union([Ttl, Type.Null()])),
  description: Type.Optional(Type.Union([Description, Type.Null()])),
});

const IdParams = Type.Object({ id: Type.String() });

export function registerTemplateRoutes(app: FastifyInstance, templates: TemplateStore): void {
  app.post('/api/v1/templates', { schema: { body: CreateBody } }, async (request, reply) => {
    const body = request.body as Static<typeof CreateBody>;
    if (!('payload_template' in body)) throw missing('payload_template');
    checkDepth(body.payload_template);
    const now = new Date().toISOString();
    const record: TemplateRecord = {
      id: body.id,
      name: body.name,
      event_type: body.event_type,
      payload_template: body.payload_template,
      default_priority: body.default_priority ?? body.priority ?? 'Normal',
      created_at: now,
      updated_at: now,
    };
    const ttl = body.default_ttl ?? body.ttl;
    if (ttl !== undefined) record.default_ttl = ttl;
    if (body.description !== undefined) record.description = body.description;
    if (!(await templates.create(tenantOf(request), record))) {
      throw new ApiError('TEMPLATE_EXISTS', `Template '${body.id}' already exists`);
    }
    return reply.code(201).send(record);
  });

  app.get('/api/v1/templates', async (request) => {
    const list = await templates.list(tenantOf(request));
    return { templates: list, total: list.length };
  });

  app.get('/api/v1/templates/:id', { schema: { params: IdParams } }, async (request) => {
    const { id } = request.params as { id: string };
    return (await templates.get(tenantOf(request), id)) ?? notFound(id);
  });

  app.put('/api/v1/templates/:id', { schema: { params: IdParams, body: UpdateBody } }, async (request) => {
    const { id } = request.params as { id: string };
    const body = request.body as Static<typeof UpdateBody>;
    if (body.id !== undefined && body.id !== id) {
      throw new ApiError('VALIDATION_ERROR', 'The id of a template cannot change', {
        details: [{ path: 'id', message: 'must equal the id in the path' }],
      });
    }
    const tenantId = tenantOf(request);
    const current = (await templates.get(tenantId, id)) ?? notFound(id);
    const updated = applyUpdate(current, body);
    if (!(await templates.replace(tenantId, updated))) notFound(id);
    return updated;
  });

  app.delete('/api/v1/templates/:id', { schema: { params: IdParams } }, async (request, reply) => {
    const { id } = request.params as { id: string };
    if (!(await templates.delete(tenantOf(request), id))) notFound(id);
    return reply.code(204).send();
  });
}

function applyUpdate(current: TemplateRecord, body: Static<typeof UpdateBody>): TemplateRecord {
  const updated: TemplateRecord = { ...current, updated_at: new Date().toISOString() };
  if (body.name !== undefined) updated.name = body.name;
  if (body.event_type !== undefined) updated.event_type = body.event_type;
  if ('payload_template' in body) {
    if (body.payload_template === undefined) throw missing('payload_template');
    checkDepth(body.payload_template);
    updated.payload_template = body.payload_template;
  }
  const priority = 'default_priority' in body ? body.default_priority : body.priority;
  if (priority !== undefined) updated.default_priority = priority ?? 'Normal';
  const ttl = 'default_ttl' in body ? body.default_ttl : body.ttl;
  if (ttl === null) delete updated.default_ttl;
  else if (ttl !== undefined) updated.default_ttl = ttl;
  if (body.description === null) delete updated.description;
  else if (body.description !== undefined) updated.description = body.description;
  return updated;
}

function checkDepth(payloadTemplate: unknown): void {
  if (templateDepth(payloadTemplate) > MAX_TEMPLATE_DEPTH) {
    throw new ApiError('VALIDATION_ERROR', 'payload_template nests too deeply', {
      details: [{ path: 'payload_template', message: `must not nest deeper than ${MAX_TEMPLATE_DEPTH} levels` }],
    });
  }
}

function missing(field: string): ApiError {
  return new ApiError('VALIDATION_ERROR', `${field} is required`, { details: [{ path: field, message: 'is required' }] });
}

function notFound(id: string): never {
  throw new ApiError('TEMPLATE_NOT_FOUND', `Template '${id}' not found`);
}
