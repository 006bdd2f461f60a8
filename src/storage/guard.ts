/**
 * Wraps a store on Redis or PostgreSQL so that a failing backend surfaces
 * as one thing: 503 SERVICE_UNAVAILABLE (SPEC §6, §8), never a 500 or a
 * hang. Calls to Redis also go through its circuit breaker, so while Redis
 * is down they fail at once instead of each waiting for a timeout.
 */
import { ApiError } from '../errors.js';

export class BackendUnavailableError extends ApiError {
  constructor(backend: string, cause: unknown) {
    super('SERVICE_UNAVAILABLE', `${backend === 'redis' ? 'Redis' : 'PostgreSQL'} is unavailable; try again later`);
    this.name = 'BackendUnavailableError';
    this.cause = cause;
  }
}

export type CallRunner = <T>(call: () => Promise<T>) => Promise<T>;

const direct: CallRunner = (call) => call();

export function guardStore<T extends object>(store: T, backend: 'redis' | 'postgres', run: CallRunner = direct): T {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function' || property === 'close') return value;
      return (...args: unknown[]) =>
        run(() => (value as (...params: unknown[]) => Promise<unknown>).apply(target, args)).catch((error: unknown) => {
          throw error instanceof BackendUnavailableError ? error : new BackendUnavailableError(backend, error);
        });
    },
  });
}
