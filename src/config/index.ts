/** Configuration: environment → typed, validated settings (SPEC §1). */
export type * from './types.js';
export type { Env, ParseOptions } from './config.js';
export {
  limitsFor,
  loadDotEnv,
  parseConfig,
  tenantEnvKey,
} from './config.js';
