import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CircuitBreaker, CircuitOpenError, backoffDelay } from '../../src/redis/circuit-breaker.ts';

const failing = () => Promise.reject(new Error('down'));
const working = () => Promise.resolve('ok');

describe('CircuitBreaker (SPEC §1 REDIS_CIRCUIT_BREAKER_*)', () => {
  test('opens after the failure threshold and then fails fast without calling', async () => {
    const changes: string[] = [];
    const breaker = new CircuitBreaker({
      failureThreshold: 3, successThreshold: 2, resetTimeoutMs: 60_000, onChange: (s) => changes.push(s),
    });
    for (let i = 0; i < 3; i++) await assert.rejects(breaker.run(failing), /down/);
    assert.equal(breaker.state, 'open');
    let called = false;
    await assert.rejects(breaker.run(async () => (called = true)), CircuitOpenError);
    assert.equal(called, false);
    assert.deepEqual(changes, ['open']);
  });

  test('a success while closed resets the count of failures', async () => {
    const breaker = new CircuitBreaker({ failureThreshold: 2, successThreshold: 1, resetTimeoutMs: 1000 });
    await assert.rejects(breaker.run(failing));
    await breaker.run(working);
    await assert.rejects(breaker.run(failing));
    assert.equal(breaker.state, 'closed');
  });

  test('half-opens after the reset timeout, closes after the success threshold, reopens on a failure', async () => {
    const breaker = new CircuitBreaker({ failureThreshold: 1, successThreshold: 2, resetTimeoutMs: 50 });
    await assert.rejects(breaker.run(failing));
    assert.equal(breaker.state, 'open');
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(breaker.state, 'half_open');
    await breaker.run(working);
    assert.equal(breaker.state, 'half_open');
    await breaker.run(working);
    assert.equal(breaker.state, 'closed');
    await assert.rejects(breaker.run(failing));
    assert.equal(breaker.state, 'open');
    await new Promise((resolve) => setTimeout(resolve, 60));
    await assert.rejects(breaker.run(failing));
    assert.equal(breaker.state, 'open');
  });
});

describe('CircuitBreaker.trip (Redis found unresponsive)', () => {
  test('opens at once from closed with no failure counted, refuses calls, and half-opens after the reset timeout', async () => {
    const changes: string[] = [];
    const breaker = new CircuitBreaker({ failureThreshold: 5, successThreshold: 1, resetTimeoutMs: 50, onChange: (s) => changes.push(s) });
    breaker.trip();
    assert.equal(breaker.state, 'open');
    assert.equal(breaker.failures, 0);
    await assert.rejects(breaker.run(async () => 'never'), CircuitOpenError);
    breaker.trip();
    assert.deepEqual(changes, ['open'], 'tripping an open breaker changes nothing');
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(await breaker.run(async () => 'ok'), 'ok');
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(changes, ['open', 'half_open', 'closed']);
  });
});

describe('backoffDelay (SPEC §1 REDIS_BACKOFF_*)', () => {
  test('grows as initial × 2^attempt under full jitter and is capped at the maximum', () => {
    assert.equal(backoffDelay(0, 100, 30_000, () => 0.999999), 99);
    assert.equal(backoffDelay(3, 100, 30_000, () => 0.5), 400);
    assert.equal(backoffDelay(20, 100, 30_000, () => 0.999999), 29_999);
    assert.equal(backoffDelay(5, 100, 30_000, () => 0), 0);
  });
});
