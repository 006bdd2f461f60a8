import { createRequire } from 'node:module';

/** The package version, reported by /health (SPEC §6.3). */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
