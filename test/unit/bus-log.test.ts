import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { busLogLength } from '../../src/cluster/cluster.ts';

describe('bus log length (docs/scaling.md "How a send travels")', () => {
  test('small messages keep the 10,000-entry cap', () => {
    assert.equal(busLogLength('x'.repeat(300)), 10_000);
    assert.equal(busLogLength('x'.repeat(3355)), 10_000);
  });

  test('large messages keep about 32 MiB of entries of their size', () => {
    assert.equal(busLogLength('x'.repeat(3356)), 9998);
    assert.equal(busLogLength('x'.repeat(64 * 1024)), 512);
  });

  test('never fewer than 100 entries, however large the message', () => {
    assert.equal(busLogLength('x'.repeat(1024 * 1024)), 100);
    assert.equal(busLogLength(''), 10_000);
  });
});
