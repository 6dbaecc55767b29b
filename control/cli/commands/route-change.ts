import type { Command } from 'commander';
import { UsageError } from '../../../shared/errors.js';
import { formatDuration } from '../../../shared/units.js';
import { ControllerError, type AdminConnection } from '../admin-client.js';
import { checkDuration, checkVersion } from '../args.js';
import type { CommonOptions } from './common.js';

/** The flags the commands that store a table version share (`route set|rm|import`), and their `--wait`. */

export type ChangeOptions = CommonOptions & { expectVersion?: string; wait?: boolean; timeout?: string; dryRun?: boolean };

/** Where the expected agents are while a version is waited for: who has applied it, who has not yet. */
export interface AppliedPoll {
  version: number;
  acked: string[];
  pending: string[];
}

const DEFAULT_WAIT_MS = 30_000;

/** --expect-version, --wait, --timeout and --dry-run (what a dry run shows is the command's own). */
export function changeOptions(cmd: Command, dryRunHelp: string): Command {
  return cmd
    .option('--expect-version <n>', 'compare-and-set: only change the table if it is still at this version')
    .option('--wait', 'wait until every expected agent has applied the new version')
    .option('--timeout <duration>', 'with --wait: give up after this long (default 30s)')
    .option('--dry-run', dryRunHelp);
}

/** Checks --expect-version and --timeout; `applied` waits (with --wait) for the agents to apply a stored version. */
export function changeParams(opts: ChangeOptions) {
  if (opts.dryRun && opts.wait) throw new UsageError('--dry-run changes nothing: there is nothing to --wait for');
  const expectedVersion = checkVersion('--expect-version', opts.expectVersion);
  const waitMs = checkDuration('--timeout', opts.timeout) ?? DEFAULT_WAIT_MS;
  return {
    expectedVersion,
    applied: (a: AdminConnection, version: number, onPoll?: (p: AppliedPoll) => void) => (opts.wait ? waitApplied(a, version, waitMs, onPoll) : Promise.resolve(undefined)),
  };
}

export const appliedText = (agents: readonly string[]) => `, applied by ${agents.length ? agents.join(', ') : 'no agents (none expected)'}`;

/** Polls Status until every expected agent has applied `version`; throws naming the laggards. `onPoll` sees each poll. */
async function waitApplied(a: AdminConnection, version: number, timeoutMs: number, onPoll?: (p: AppliedPoll) => void): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await a.status();
    const expected = s.agents.filter((x) => x.expected);
    const behind = expected.filter((x) => x.appliedVersion < version);
    onPoll?.({ version, acked: expected.filter((x) => x.appliedVersion >= version).map((x) => x.id), pending: behind.map((x) => x.id) });
    if (behind.length === 0) return expected.map((x) => x.id);
    if (Date.now() > deadline) {
      throw new ControllerError(
        `table version ${version} is stored but not applied within ${formatDuration(timeoutMs)} by ${behind.map((x) => `${x.id} (${x.state}, at v${x.appliedVersion})`).join(', ')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
