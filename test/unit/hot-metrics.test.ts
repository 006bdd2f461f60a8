/**
 * The hot-path counter and histogram (src/ops/hot-metrics.ts) must read on
 * /metrics exactly as prom-client's own Counter and Histogram do (SPEC §9):
 * the same operations on both, in two registries, give the same text,
 * before and after a reset.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Counter, Histogram, Registry } from 'prom-client';
import { HotCounter, HotHistogram } from '../../src/ops/hot-metrics.ts';

const BUCKETS = [0.001, 0.01, 0.1, 0.5];

function pair(): { reference: Registry; hot: Registry } {
  return { reference: new Registry(), hot: new Registry() };
}

describe('HotCounter and HotHistogram read as prom-client (SPEC §9)', () => {
  test('labelled: the same series, label order, values and text; children keep counting after a reset', async () => {
    const { reference, hot } = pair();
    const config = { help: 'h', labelNames: ['method', 'status'] };
    const refCounter = new Counter({ name: 'c_total', ...config, registers: [reference] });
    const refHistogram = new Histogram({ name: 'h_seconds', ...config, buckets: BUCKETS, registers: [reference] });
    const hotCounter = new HotCounter({ name: 'c_total', ...config, registers: [hot] });
    const hotHistogram = new HotHistogram({ name: 'h_seconds', ...config, buckets: BUCKETS, registers: [hot] });

    const kept = hotCounter.labels('POST', '200');
    const keptHistogram = hotHistogram.labels('POST', '200');
    for (const [method, status, value] of [
      ['POST', '200', 0.0004],
      ['GET', '404', 0.02],
      ['POST', '200', 0.7],
      ['POST', '500', 0.1],
    ] as const) {
      refCounter.labels(method, status).inc();
      refHistogram.labels(method, status).observe(value);
      hotCounter.labels(method, status).inc();
      hotHistogram.labels(method, status).observe(value);
    }
    refCounter.labels('GET', '404').inc(2.5);
    hotCounter.labels('GET', '404').inc(2.5);
    assert.equal(await hot.metrics(), await reference.metrics());
    assert.match(await hot.metrics(), /^c_total\{method="GET",status="404"\} 3\.5$/m);

    reference.resetMetrics();
    hot.resetMetrics();
    assert.equal(await hot.metrics(), await reference.metrics());

    refCounter.labels('POST', '200').inc();
    refHistogram.labels('POST', '200').observe(0.05);
    kept.inc();
    keptHistogram.observe(0.05);
    assert.equal(await hot.metrics(), await reference.metrics());
    assert.match(await hot.metrics(), /^h_seconds_bucket\{le="0\.1",method="POST",status="200"\} 1$/m);
  });

  test('unlabelled: listed from the start; after a reset the counter reads 0 and the histogram nothing', async () => {
    const { reference, hot } = pair();
    new Counter({ name: 'u_total', help: 'h', registers: [reference] });
    new Histogram({ name: 'u_seconds', help: 'h', buckets: BUCKETS, registers: [reference] }).observe(0.3);
    new HotCounter({ name: 'u_total', help: 'h', registers: [hot] });
    new HotHistogram({ name: 'u_seconds', help: 'h', buckets: BUCKETS, registers: [hot] }).observe(0.3);
    assert.equal(await hot.metrics(), await reference.metrics());
    assert.match(await hot.metrics(), /^u_seconds_count 1$/m);
    reference.resetMetrics();
    hot.resetMetrics();
    assert.equal(await hot.metrics(), await reference.metrics());
    assert.match(await hot.metrics(), /^u_total 0$/m);
    assert.doesNotMatch(await hot.metrics(), /^u_seconds_count/m);
  });

  test('refuses what prom-client refuses: a wrong number of label values, a negative or non-finite amount', () => {
    const counter = new HotCounter({ name: 'r_total', help: 'h', labelNames: ['a'], registers: [new Registry()] });
    assert.throws(() => counter.labels('x', 'y'), /r_total: expected 1 label values, got 2/);
    assert.throws(() => counter.labels('x').inc(-1), /not possible to decrease a counter/);
    assert.throws(() => counter.labels('x').inc(Number.NaN), /not a valid number/);
  });
});
