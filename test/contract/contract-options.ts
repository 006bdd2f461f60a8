/**
 * What a backend's contract run may declare: known gaps, each a test name
 * with the reason, run as `todo` (reported, not failing) instead of being
 * silently different (STYLE: known gaps are explicit, with a reason).
 */
import { test } from 'node:test';

export interface ContractOptions {
  /** Test name → why this backend does not meet that clause yet. */
  knownGaps?: Record<string, string>;
}

/** `test`, but a name listed in knownGaps runs as todo with its reason. */
export function contractTest(options: ContractOptions) {
  return (name: string, fn: () => Promise<void>): void => {
    const gap = options.knownGaps?.[name];
    test(name, gap === undefined ? {} : { todo: gap }, fn);
  };
}
