import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseTriggerMessage } from '../../src/triggers/trigger-message.ts';

const event = { event_type: 'order.created', payload: { id: 1 } };
const parse = (body: unknown, tenancy = true) => parseTriggerMessage(JSON.stringify(body), tenancy);

describe('parseTriggerMessage (SPEC §8)', () => {
  test('reads every target type of the Ara 1.0 format', () => {
    assert.deepEqual(parse({ type: 'user', target: 'u1', event }), {
      ok: true,
      request: { tenantId: 'default', target: { type: 'user', userId: 'u1' }, content: { eventType: 'order.created', payload: { id: 1 }, priority: 'Normal' } },
    });
    const users = parse({ type: 'users', target: 'u1', event });
    assert.deepEqual(users.ok && users.request.target, { type: 'users', userIds: ['u1'] });
    const many = parse({ type: 'users', target: ['a', 'b'], event });
    assert.deepEqual(many.ok && many.request.target, { type: 'users', userIds: ['a', 'b'] });
    const broadcast = parse({ type: 'broadcast', event });
    assert.deepEqual(broadcast.ok && broadcast.request.target, { type: 'broadcast' });
    const channel = parse({ type: 'channel', target: 'orders', event });
    assert.deepEqual(channel.ok && channel.request.target, { type: 'channel', channel: 'orders' });
    const channels = parse({ type: 'channels', target: ['a', 'b'], event });
    assert.deepEqual(channels.ok && channels.request.target, { type: 'channels', channels: ['a', 'b'] });
  });

  test('keeps priority, ttl and correlation_id', () => {
    const parsed = parse({ type: 'user', target: 'u', event: { ...event, priority: 'High', ttl: 60, correlation_id: 'c' } });
    assert.deepEqual(parsed.ok && parsed.request.content, {
      eventType: 'order.created', payload: { id: 1 }, priority: 'High', ttl: 60, correlationId: 'c',
    });
  });

  test('takes tenant_id as given, "*" for broadcasts only, and ignores it with tenancy off', () => {
    const scoped = parse({ type: 'user', target: 'u', tenant_id: 'acme', event });
    assert.equal(scoped.ok && scoped.request.tenantId, 'acme');
    const every = parse({ type: 'broadcast', tenant_id: '*', event });
    assert.equal(every.ok && every.request.tenantId, '*');
    assert.deepEqual(parse({ type: 'user', target: 'u', tenant_id: '*', event }), {
      ok: false, problem: 'tenant_id must be a valid tenant id ("*" only for broadcast)',
    });
    assert.deepEqual(parse({ type: 'user', target: 'u', tenant_id: 'a:b', event }), {
      ok: false, problem: 'tenant_id must be a valid tenant id ("*" only for broadcast)',
    });
    const off = parse({ type: 'user', target: 'u', tenant_id: 'acme', event }, false);
    assert.equal(off.ok && off.request.tenantId, 'default');
  });

  test('names the first problem without quoting the payload', () => {
    const cases: Array<[string, string]> = [
      ['{not json', 'message is not valid JSON'],
      ['[1]', 'message must be a JSON object'],
      [JSON.stringify({ type: 'User', target: 'u', event }), 'type must be one of user, users, broadcast, channel, channels'],
      [JSON.stringify({ type: 'user', target: 5, event }), 'target must be a user id (1-256 characters)'],
      [JSON.stringify({ type: 'user', target: 'x'.repeat(257), event }), 'target must be a user id (1-256 characters)'],
      [JSON.stringify({ type: 'users', target: [], event }), 'target must be 1-10000 user ids'],
      [JSON.stringify({ type: 'channel', target: 'a:b', event }), 'target must be a valid channel name'],
      [JSON.stringify({ type: 'channels', target: Array(101).fill('a'), event }), 'target must be 1-100 valid channel names'],
      [JSON.stringify({ type: 'user', target: 'u' }), 'event must be an object'],
      [JSON.stringify({ type: 'user', target: 'u', event: { payload: 'secret-payload' } }), 'event.event_type must be 1-128 characters'],
      [JSON.stringify({ type: 'user', target: 'u', event: { event_type: 'x' } }), 'event.payload is required'],
      [JSON.stringify({ type: 'user', target: 'u', event: { ...event, priority: 'high' } }), 'event.priority must be Low, Normal, High or Critical'],
      [JSON.stringify({ type: 'user', target: 'u', event: { ...event, ttl: -1 } }), 'event.ttl must be a whole number of seconds'],
      [JSON.stringify({ type: 'user', target: 'u', event: { ...event, correlation_id: 7 } }), 'event.correlation_id must be a string of at most 128 characters'],
    ];
    for (const [text, problem] of cases) {
      assert.deepEqual(parseTriggerMessage(text, true), { ok: false, problem }, text.slice(0, 60));
      assert.ok(!problem.includes('secret-payload'));
    }
  });

  test('refuses a message over 1 MiB before parsing it', () => {
    const huge = JSON.stringify({ type: 'user', target: 'u', event: { event_type: 'x', payload: 'y'.repeat(1024 * 1024) } });
    assert.deepEqual(parseTriggerMessage(huge, true), { ok: false, problem: 'message is larger than 1 MiB' });
  });
});
