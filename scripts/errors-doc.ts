/**
 * Renders the tables of docs/errors.md from src/errors.ts, so the document
 * cannot drift from the catalogue (test/unit/errors.test.ts compares them).
 * Run `npx tsx scripts/errors-doc.ts --write` after changing the catalogue.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { CLOSE_CODES, HTTP_ERRORS, REALTIME_ERRORS } from '../src/errors.ts';

export const BEGIN = '<!-- generated from src/errors.ts: begin -->';
export const END = '<!-- generated from src/errors.ts: end -->';

export function renderErrorTables(): string {
  const http = Object.entries(HTTP_ERRORS)
    .map(([code, { status, message }]) => `| ${status} | \`${code}\` | ${message} |`)
    .join('\n');
  const realtime = Object.entries(REALTIME_ERRORS)
    .map(([code, { fatal, meaning }]) => `| \`${code}\` | ${fatal ? 'yes' : 'no'} | ${meaning} |`)
    .join('\n');
  const closes = Object.entries(CLOSE_CODES)
    .map(([name, { code, reconnect, reason }]) => `| ${code} | \`${name}\` | ${reconnect ? 'yes' : 'no'} | ${reason} |`)
    .join('\n');
  return [
    BEGIN,
    '### HTTP errors',
    '',
    '| Status | Code | Default message |',
    '|---|---|---|',
    http,
    '',
    '### Realtime `error` messages (WebSocket and SSE)',
    '',
    '| Code | Connection closed after it | When |',
    '|---|---|---|',
    realtime,
    '',
    '### WebSocket close codes',
    '',
    '| Code | Name | Reconnect as is | Meaning |',
    '|---|---|---|---|',
    closes,
    END,
  ].join('\n');
}

export function generatedSection(document: string): string {
  const start = document.indexOf(BEGIN);
  const end = document.indexOf(END);
  return start < 0 || end < 0 ? '' : document.slice(start, end + END.length);
}

if (process.argv.includes('--write')) {
  const path = new URL('../docs/errors.md', import.meta.url);
  const document = readFileSync(path, 'utf8');
  writeFileSync(path, document.replace(generatedSection(document), renderErrorTables()));
}
