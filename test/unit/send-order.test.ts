/**
 * SendOrder (src/delivery/send-order.ts): the order a node gives each
 * notification it stores, so stores keep dispatch order (SPEC §7 "in the
 * order they were sent", resume "in send order").
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SendOrder } from '../../src/delivery/send-order.ts';

/** A clock the test moves by hand. */
function manualClock(startMs: number) {
  const clock = { now: startMs, read: () => clock.now };
  return clock;
}

describe('SendOrder (SPEC §7 send order)', () => {
  test('is the clock in ms × 1000 when the clock has moved on since the last value', () => {
    const clock = manualClock(1_700_000_000_000);
    const order = new SendOrder(clock.read);
    assert.equal(order.next(), 1_700_000_000_000_000);
    clock.now += 5;
    assert.equal(order.next(), 1_700_000_000_005_000);
  });

  test('counts up by one within the same millisecond', () => {
    const order = new SendOrder(() => 1_700_000_000_000);
    assert.deepEqual(
      [order.next(), order.next(), order.next()],
      [1_700_000_000_000_000, 1_700_000_000_000_001, 1_700_000_000_000_002],
    );
  });

  test('never goes backwards when the clock steps back, and rejoins the clock once it passes the counter', () => {
    const clock = manualClock(1_700_000_000_000);
    const order = new SendOrder(clock.read);
    assert.equal(order.next(), 1_700_000_000_000_000);
    clock.now -= 60_000;
    assert.equal(order.next(), 1_700_000_000_000_001);
    assert.equal(order.next(), 1_700_000_000_000_002);
    clock.now = 1_700_000_000_001_000;
    assert.equal(order.next(), 1_700_000_000_001_000_000);
  });

  test('more than 1,000 values in one millisecond stay strictly increasing and carry on from there', () => {
    const clock = manualClock(1_700_000_000_000);
    const order = new SendOrder(clock.read);
    const values = Array.from({ length: 2_500 }, () => order.next());
    for (let i = 1; i < values.length; i++) assert.equal(values[i], values[i - 1]! + 1);
    // The next millisecond's ms × 1000 is behind the counter: the counter wins.
    clock.now += 1;
    assert.equal(order.next(), values[values.length - 1]! + 1);
  });

  test('a fractional clock reading is taken at whole milliseconds, so every value is an integer', () => {
    const order = new SendOrder(() => 1_700_000_000_000.75);
    assert.equal(order.next(), 1_700_000_000_000_000);
    assert.equal(Number.isSafeInteger(order.next()), true);
  });

  test('a restarted node (a new SendOrder) continues above what the previous run handed out', () => {
    const clock = manualClock(1_700_000_000_000);
    const first = new SendOrder(clock.read);
    const before = Array.from({ length: 10 }, () => first.next());
    clock.now += 1;
    const second = new SendOrder(clock.read);
    assert.ok(second.next() > before[before.length - 1]!);
  });

  test('with the real clock values are safe integers near Date.now() × 1000', () => {
    const order = new SendOrder();
    const lower = Date.now() * 1000;
    const value = order.next();
    const upper = Date.now() * 1000 + 1;
    assert.ok(Number.isSafeInteger(value));
    assert.ok(value >= lower && value <= upper, `${value} in [${lower}, ${upper}]`);
  });
});
