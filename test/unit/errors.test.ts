import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { generatedSection, renderErrorTables } from '../../scripts/errors-doc.ts';
import { ApiError, CLOSE_CODES, HTTP_ERRORS } from '../../src/errors.ts';

describe('error catalogue', () => {
  test('docs/errors.md lists exactly the codes of src/errors.ts', () => {
    const document = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    assert.equal(generatedSection(document), renderErrorTables());
  });

  test('has every HTTP code of SPEC §6 with its status', () => {
    const spec: Record<string, number> = {
      INVALID_JSON: 400, VALIDATION_ERROR: 400, INVALID_TENANT: 400, UNAUTHORIZED: 401,
      TENANT_ACCESS_DENIED: 403, NOT_FOUND: 404, CHANNEL_NOT_FOUND: 404, USER_NOT_CONNECTED: 404,
      TEMPLATE_NOT_FOUND: 404, TENANT_NOT_FOUND: 404, METHOD_NOT_ALLOWED: 405, TEMPLATE_EXISTS: 409,
      PAYLOAD_TOO_LARGE: 413, UNSUPPORTED_MEDIA_TYPE: 415, RATE_LIMITED: 429, SERVICE_UNAVAILABLE: 503,
    };
    for (const [code, status] of Object.entries(spec)) {
      assert.equal(HTTP_ERRORS[code as keyof typeof HTTP_ERRORS]?.status, status, code);
    }
  });

  test('has the close codes of SPEC §4', () => {
    const codes = Object.values(CLOSE_CODES).map((entry) => entry.code);
    assert.deepEqual(codes, [1000, 1001, 1007, 1008, 1009, 1011, 1013, 4001, 4002, 4008]);
  });

  test('ApiError builds the envelope, with details only when there are some', () => {
    assert.deepEqual(new ApiError('NOT_FOUND').toBody(), { error: { code: 'NOT_FOUND', message: 'Route not found' } });
    const withDetails = new ApiError('VALIDATION_ERROR', 'bad', { details: [{ path: 'a', message: 'b' }] });
    assert.equal(withDetails.status, 400);
    assert.deepEqual(withDetails.toBody(), {
      error: { code: 'VALIDATION_ERROR', message: 'bad', details: [{ path: 'a', message: 'b' }] },
    });
  });
});
