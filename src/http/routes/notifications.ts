/**
 * The send routes of SPEC §6.1: five single sends and the batch.
 */
import { randomUUID } from 'node:crypto';
import { isoTime } from '../../clock.js';
import type { FastifyInstance } from 'fastify';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { resolveContent, type ContentRequest } from '../../delivery/content.js';
import type { Delivery, DispatchResult } from '../../delivery/delivery.js';
import type { Target } from '../../delivery/dispatcher.js';
import { buildNotification, type Audience } from '../../delivery/notification.js';
import { ApiError, type ErrorDetail } from '../../errors.js';
import { isValidChannelName } from '../../hub/channel-name.js';
import type { Metrics } from '../../ops/metrics.js';
import type { TemplateStore } from '../../storage/types.js';
import { tenantOf } from '../api-scope.js';
import { BATCH_BODY_LIMIT } from '../app.js';
import {
  BatchBody,
  BatchItem,
  BroadcastBody,
  ChannelBody,
  ChannelsBody,
  SendBody,
  SendResponse,
  SendToUsersBody,
  type BatchBodyInput,
  type BatchItemInput,
} from '../schemas.js';

export interface NotificationRouteDeps {
  delivery: Delivery;
  templates: TemplateStore;
  metrics: Metrics;
}

const NIL_UUID = '00000000-0000-0000-0000-000000000000';
const batchItemCheck = TypeCompiler.Compile(BatchItem);

interface SendOutcome {
  notificationId: string;
  result: DispatchResult;
}

export function registerNotificationRoutes(app: FastifyInstance, deps: NotificationRouteDeps): void {
  const send = async (
    tenantId: string,
    target: Target,
    body: ContentRequest,
    source: string,
    audience?: Audience,
  ): Promise<SendOutcome> => {
    const resolved = resolveContent(body, tenantId, deps.templates, audience);
    const content = resolved instanceof Promise ? await resolved : resolved;
    const notification = buildNotification(content, source);
    return { notificationId: notification.id, result: await deps.delivery.send(tenantId, target, notification) };
  };
  const route = (path: string, schema: object, toTarget: (body: never) => Target) => {
    app.post(path, { schema: { body: schema, response: { 200: SendResponse } } }, async (request) => {
      const body = request.body as ContentRequest & { audience?: Audience };
      const target = toTarget(body as never);
      const outcome = await send(tenantOf(request), target, body, 'http-api', body.audience);
      return sendResponse(outcome);
    });
  };

  route('/api/v1/notifications/send', SendBody, (body: { target_user_id: string }) => ({
    type: 'user',
    userId: body.target_user_id,
  }));
  route('/api/v1/notifications/send-to-users', SendToUsersBody, (body: { target_user_ids: string[] }) => ({
    type: 'users',
    userIds: body.target_user_ids,
  }));
  route('/api/v1/notifications/broadcast', BroadcastBody, (body: { audience?: Audience }) => {
    if (body.audience?.type === 'Channels') checkedChannels(body.audience.value, 'audience.value');
    return { type: 'broadcast' };
  });
  route('/api/v1/notifications/channel', ChannelBody, (body: { channel: string }) => ({
    type: 'channel',
    channel: checkedChannels([body.channel], 'channel', true)[0]!,
  }));
  route('/api/v1/notifications/channels', ChannelsBody, (body: { channels: string[] }) => ({
    type: 'channels',
    channels: checkedChannels(body.channels, 'channels'),
  }));

  app.post(
    '/api/v1/notifications/batch',
    { bodyLimit: BATCH_BODY_LIMIT, schema: { body: BatchBody } },
    async (request) => {
      const body = request.body as BatchBodyInput;
      deps.metrics.batchSize.observe(body.notifications.length);
      const tenantId = tenantOf(request);
      return runBatch(body, (item) => send(tenantId, batchTarget(item), item as ContentRequest, 'batch'));
    },
  );
}

function sendResponse({ notificationId, result }: SendOutcome) {
  return {
    success: result.delivered + result.queued > 0,
    notification_id: notificationId,
    delivered_to: result.delivered,
    failed: result.failed,
    queued: result.queued,
    timestamp: isoTime(Date.now()),
    ...(result.nodes === undefined ? {} : { nodes: result.nodes }),
  };
}

/** Every name must be a valid channel name (SPEC §4); all problems listed. */
function checkedChannels(names: string[], field: string, single = false): string[] {
  const details: ErrorDetail[] = [];
  names.forEach((name, index) => {
    if (!isValidChannelName(name)) {
      const path = single ? field : `${field}.${index}`;
      details.push({ path, message: `invalid channel name ${JSON.stringify(name)}` });
    }
  });
  if (details.length > 0) throw new ApiError('VALIDATION_ERROR', 'Invalid channel name', { details });
  return names;
}

function batchTarget(item: BatchItemInput): Target {
  const target = item.target;
  switch (target.type) {
    case 'user':
      return { type: 'user', userId: target.value };
    case 'users':
      return { type: 'users', userIds: target.value };
    case 'broadcast':
      return { type: 'broadcast' };
    case 'channel':
      return { type: 'channel', channel: checkedChannels([target.value], 'target.value', true)[0]! };
    case 'channels':
      return { type: 'channels', channels: checkedChannels(target.value, 'target.value') };
  }
}

interface BatchResult {
  index: number;
  success: boolean;
  notification_id: string;
  delivered_to: number;
  failed: number;
  queued: number;
  error?: string;
  skipped?: boolean;
}

/**
 * Items run in order. An invalid item fails alone, unless stop_on_error:
 * then the rest are reported as skipped. With deduplicate, an item whose
 * target and event type repeat an earlier one's is skipped.
 */
async function runBatch(
  body: BatchBodyInput,
  sendItem: (item: BatchItemInput) => Promise<SendOutcome>,
): Promise<object> {
  const stopOnError = body.options?.stop_on_error === true;
  const deduplicate = body.options?.deduplicate === true;
  const seen = new Set<string>();
  const results: BatchResult[] = [];
  let stopped = false;
  for (const [index, raw] of body.notifications.entries()) {
    if (stopped) {
      results.push(skipped(index, false, 'Skipped due to stop_on_error'));
      continue;
    }
    const outcome = await runItem(index, raw, sendItem, deduplicate ? seen : null);
    results.push(outcome);
    if (outcome.error !== undefined && stopOnError) stopped = true;
  }
  return {
    batch_id: randomUUID(),
    results,
    summary: summarise(results),
    timestamp: new Date().toISOString(),
  };
}

async function runItem(
  index: number,
  raw: unknown,
  sendItem: (item: BatchItemInput) => Promise<SendOutcome>,
  seen: Set<string> | null,
): Promise<BatchResult> {
  if (!batchItemCheck.Check(raw)) {
    const first = batchItemCheck.Errors(raw).First();
    const where = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : 'item';
    return failedItem(index, `${where}: ${first?.message ?? 'invalid item'}`);
  }
  if (seen !== null) {
    const key = dedupeKey(raw);
    if (seen.has(key)) return skipped(index, true);
    seen.add(key);
  }
  try {
    const { notificationId, result } = await sendItem(raw);
    return {
      index,
      success: result.delivered + result.queued > 0,
      notification_id: notificationId,
      delivered_to: result.delivered,
      failed: result.failed,
      queued: result.queued,
    };
  } catch (error) {
    if (error instanceof ApiError) return failedItem(index, itemErrorText(error));
    throw error;
  }
}

function itemErrorText(error: ApiError): string {
  const detail = error.details?.map((d) => `${d.path}: ${d.message}`).join('; ');
  return detail ? `${error.code}: ${detail}` : `${error.code}: ${error.message}`;
}

/** Same target (order-insensitive for lists) and same event type or template. */
function dedupeKey(item: BatchItemInput): string {
  const target = item.target;
  const value = Array.isArray(target.value) ? [...target.value].sort() : (target.value ?? null);
  const content = item.template_id !== undefined ? `template:${item.template_id}` : `event:${item.event_type}`;
  return JSON.stringify([target.type, value, content]);
}

function failedItem(index: number, error: string): BatchResult {
  return { index, success: false, notification_id: NIL_UUID, delivered_to: 0, failed: 0, queued: 0, error };
}

function skipped(index: number, success: boolean, error?: string): BatchResult {
  const result: BatchResult = {
    index,
    success,
    notification_id: NIL_UUID,
    delivered_to: 0,
    failed: 0,
    queued: 0,
    skipped: true,
  };
  if (error !== undefined) result.error = error;
  return result;
}

function summarise(results: BatchResult[]) {
  let succeeded = 0;
  let failed = 0;
  let skippedCount = 0;
  let totalDelivered = 0;
  for (const result of results) {
    if (result.skipped) skippedCount++;
    else if (result.success) succeeded++;
    else failed++;
    totalDelivered += result.delivered_to;
  }
  return { total: results.length, succeeded, failed, skipped: skippedCount, total_delivered: totalDelivered };
}
