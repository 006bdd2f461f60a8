/**
 * Request and response schemas of the HTTP API (SPEC §6), in TypeBox so
 * the same definitions validate requests and can generate OpenAPI.
 */
import { Type, type Static } from '@sinclair/typebox';

export const PrioritySchema = Type.Union(
  [Type.Literal('Low'), Type.Literal('Normal'), Type.Literal('High'), Type.Literal('Critical')],
  { description: 'Delivery priority; Critical/High overtake Normal/Low in a backlog' },
);

const UserId = Type.String({ minLength: 1, maxLength: 256 });
/** Channel names are checked by isValidChannelName; the schema bounds the size. */
const ChannelName = Type.String({ minLength: 1, maxLength: 64 });
const TemplateId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.-]+$' });

/** Content fields every send shares: inline event or template. */
export const ContentFields = {
  event_type: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  payload: Type.Optional(Type.Unknown()),
  template_id: Type.Optional(TemplateId),
  variables: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  priority: Type.Optional(PrioritySchema),
  ttl: Type.Optional(Type.Integer({ minimum: 0, maximum: 4294967295 })),
  correlation_id: Type.Optional(Type.String({ maxLength: 128 })),
};

export const AudienceSchema = Type.Union([
  Type.Object({ type: Type.Literal('All') }),
  Type.Object({ type: Type.Literal('Roles'), value: Type.Array(Type.String(), { maxItems: 1000 }) }),
  Type.Object({ type: Type.Literal('Users'), value: Type.Array(UserId, { maxItems: 10000 }) }),
  Type.Object({ type: Type.Literal('Channels'), value: Type.Array(ChannelName, { maxItems: 100 }) }),
]);

export const SendBody = Type.Object({ target_user_id: UserId, ...ContentFields });
export const SendToUsersBody = Type.Object({
  target_user_ids: Type.Array(UserId, { minItems: 1, maxItems: 10000 }),
  ...ContentFields,
});
export const BroadcastBody = Type.Object({ audience: Type.Optional(AudienceSchema), ...ContentFields });
export const ChannelBody = Type.Object({ channel: ChannelName, ...ContentFields });
export const ChannelsBody = Type.Object({
  channels: Type.Array(ChannelName, { minItems: 1, maxItems: 100 }),
  ...ContentFields,
});

export const BatchTarget = Type.Union([
  Type.Object({ type: Type.Literal('user'), value: UserId }),
  Type.Object({ type: Type.Literal('users'), value: Type.Array(UserId, { minItems: 1, maxItems: 10000 }) }),
  Type.Object({ type: Type.Literal('broadcast'), value: Type.Optional(Type.Null()) }),
  Type.Object({ type: Type.Literal('channel'), value: ChannelName }),
  Type.Object({ type: Type.Literal('channels'), value: Type.Array(ChannelName, { minItems: 1, maxItems: 100 }) }),
]);

/** One batch item; validated per item so an invalid one fails alone. */
export const BatchItem = Type.Object({ target: BatchTarget, ...ContentFields });

export const BatchBody = Type.Object({
  notifications: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 100 }),
  options: Type.Optional(
    Type.Object({
      stop_on_error: Type.Optional(Type.Boolean()),
      deduplicate: Type.Optional(Type.Boolean()),
    }),
  ),
});

export const SendResponse = Type.Object({
  success: Type.Boolean(),
  notification_id: Type.String({ format: 'uuid' }),
  delivered_to: Type.Integer(),
  failed: Type.Integer(),
  queued: Type.Integer(),
  timestamp: Type.String(),
  /** Cluster mode only: nodes the notification was routed to. */
  nodes: Type.Optional(Type.Integer()),
});

export type ContentInput = {
  event_type?: string;
  payload?: unknown;
  template_id?: string;
  variables?: Record<string, unknown>;
  priority?: Static<typeof PrioritySchema>;
  ttl?: number;
  correlation_id?: string;
};
export type BatchItemInput = Static<typeof BatchItem>;
export type BatchBodyInput = Static<typeof BatchBody>;
export type AudienceInput = Static<typeof AudienceSchema>;
