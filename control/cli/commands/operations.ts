import type { Command } from 'commander';
import { UsageError } from '../../../shared/errors.js';
import { formatDuration } from '../../../shared/units.js';
import { actor, ControllerError, withAdmin, type Operation, type OperationKind } from '../admin-client.js';
import { checkDuration, checkExclude, checkMatch, checkTarget, readAddressFile } from '../args.js';
import { action, emit } from '../output.js';
import { describeOperation, followOperation } from '../progress.js';
import { exitHelp, GROUP_HELP, operator, waitOptions, type CommonOptions } from './common.js';

/**
 * Coordinated operations kept by the controller: `hold`, `release`, `switchover`, `flush` (each waits for the
 * agents' acks, with progress) and `operation follow|show`.
 */

type OpOptions = CommonOptions & { timeout?: string; exclude?: string[] };
type SwitchoverOptions = OpOptions & { to: string; waitDrained?: boolean; recipients?: string };

const OP_FAIL = 'an agent nacked, timed out or is disconnected, or the controller refused or could not be reached (the line names the agents)';

/** Extra time the client gives a stream beyond the operation's own --timeout before it gives up itself. */
const STREAM_GRACE_MS = 30_000;

/** Adds `hold`, `release`, `switchover`, `flush` and the `operation` group. */
export function registerOperations(program: Command): void {
  coordinated(
    program,
    'hold',
    'Coordinated hold: every agent keeps accepting mail for MATCH but stops delivering it (held mail does not age).',
    'every expected agent to ack the table version with MATCH held; after an agent\'s ack it attempts no held mail.',
    'held and acked by every expected agent',
  )
    .argument('<match>', 'the route\'s MATCH (address, domain or .parent-domain)')
    .action(action((match: string, opts: OpOptions) => start('hold', checkMatch(match), opts)));

  coordinated(
    program,
    'release',
    'Coordinated release: every agent resumes delivering mail for MATCH (held mail becomes due at once).',
    'every expected agent to ack the table version with MATCH released.',
    'released and acked by every expected agent',
  )
    .argument('<match>', 'the route\'s MATCH')
    .action(action((match: string, opts: OpOptions) => start('release', checkMatch(match), opts)));

  coordinated(
    program,
    'switchover',
    'Coordinated re-route of MATCH (or, with --recipients FILE, of the listed mailboxes only) to a new server: hold everywhere, re-point to --to everywhere, release, flush. A failure leaves what it moves held (safe).',
    'each step\'s acks from every expected agent (hold, re-point, release, flush); with --wait-drained also until every agent reports zero queued for MATCH (then prints per-agent delivered counts).',
    'every step done and verified on every expected agent',
  )
    .argument('[match]', 'the route\'s MATCH (not with --recipients)')
    .requiredOption('--to <target>', 'new TARGET: smtp:[host]:port or smtp:host:port')
    .option(
      '--recipients <file>',
      'staged migration: move only the addresses in FILE (one per line, # comments), each as an address route of its own; the rest of their domains stays where it is',
    )
    .option('--wait-drained', 'after the release, wait until the queue for MATCH (or the moved addresses) is empty on every agent')
    .action(action(switchover));

  coordinated(
    program,
    'flush',
    'Deliver now whatever is queued or deferred for MATCH (all routes without MATCH) on every agent.',
    'every expected agent to report that it has made the mail due (not that it was delivered).',
    'every expected agent flushed',
  )
    .argument('[match]', 'the route\'s MATCH (default: all routes)')
    .action(action((match: string | undefined, opts: OpOptions) => start('flush', match === undefined || match === '' ? '' : checkMatch(match), opts)));

  const operation = program.command('operation').description('Coordinated operations (hold, release, switchover, flush) kept by the controller.').addHelpText('after', GROUP_HELP);

  operator(operation, 'ls', 'The running and recent operations (the newest 20), newest first.', exitHelp('one answer from the controller.', 'listed', 'the controller refused or could not be reached')).action(
    action(operationLs),
  );

  operator(
    operation,
    'follow',
    'Re-attach to an operation (e.g. after Ctrl-C or a lost connection) and show its progress until it ends.',
    exitHelp('the operation to finish.', 'the operation finished and is verified on every expected agent', 'the operation failed (naming the agents), is unknown, or the controller could not be reached', true),
  )
    .argument('<id>', 'operation id (shown in progress output and by `mxswitch status`)')
    .action(action(operationFollow));

  operator(
    operation,
    'show',
    'Show one operation: kind, match, state, current step, error.',
    exitHelp('one answer from the controller.', 'the operation is done', 'it failed, is still running or unknown, or the controller could not be reached'),
  )
    .argument('<id>', 'operation id')
    .action(action(operationShow));
}

/** A coordinated operation's command: connection flags, --timeout/--exclude, and help on its waiting and progress. */
function coordinated(program: Command, name: OperationKind, description: string, waits: string, ok: string): Command {
  return waitOptions(operator(program, name, description, exitHelp(waits, ok, OP_FAIL, true)));
}

/** Starts a coordinated operation on `match` (already checked) and follows it until it ends. */
async function start(kind: OperationKind, match: string, opts: OpOptions, switchTo?: { target: string; waitDrained: boolean; recipients?: string[] }): Promise<void> {
  const timeoutMs = checkDuration('--timeout', opts.timeout);
  const exclude = checkExclude(opts.exclude);
  // The client bounds the stream only when told to (--timeout), by that plus a grace period. A switchover's timeout
  // covers every step plus (with --wait-drained) the drain: four times as long.
  const deadline = timeoutMs === undefined ? undefined : (timeoutMs + STREAM_GRACE_MS) * (switchTo ? 4 : 1);
  const moved = switchTo?.recipients?.length;
  const subject = moved ? `${moved} address${moved === 1 ? '' : 'es'}` : match;
  const title = kind === 'flush' ? `flush ${match || '(all routes)'}` : `${kind} ${subject}${switchTo ? ` -> ${switchTo.target}` : ''}`;
  await withAdmin(opts, async (a) => {
    const req = { match, exclude, timeoutMs: timeoutMs ?? 0, actor: actor(), ...switchTo };
    await followOperation(a, title, a.startOperation(kind, req, deadline), opts);
  });
}

async function switchover(matchText: string | undefined, opts: SwitchoverOptions): Promise<void> {
  if ((matchText === undefined) === (opts.recipients === undefined)) throw new UsageError('give MATCH or --recipients FILE (one of the two)');
  const target = checkTarget(opts.to, '--to');
  const waitDrained = opts.waitDrained ?? false;
  if (opts.recipients === undefined) return start('switchover', checkMatch(matchText!), opts, { target, waitDrained });
  const recipients = readAddressFile(opts.recipients, undefined, 'nothing was changed');
  if (!recipients.length) throw new UsageError(`${opts.recipients}: no addresses; nothing was changed`);
  await start('switchover', '', opts, { target, waitDrained, recipients });
}

function checkOperationId(id: string): void {
  if (!id.trim()) throw new UsageError('operation ID is empty');
}

async function operationFollow(id: string, opts: CommonOptions): Promise<void> {
  checkOperationId(id);
  await withAdmin(opts, async (a) => {
    await followOperation(a, `operation ${id}`, a.follow(id), opts);
  });
}

async function operationLs(opts: CommonOptions): Promise<void> {
  const { operations } = await withAdmin(opts, (a) => a.status());
  const now = Date.now();
  emit(opts, { operations }, (v) => (v.operations.length ? v.operations.map((o) => operationLine(o, now)).join('\n') : 'no operations yet'));
}

/** `operation show ID`: exit 0 when done, 1 when failed or still running. */
async function operationShow(id: string, opts: CommonOptions): Promise<void> {
  checkOperationId(id);
  const res = await withAdmin(opts, (a) => a.getOperation(id));
  const op = res.operation;
  if (!op) throw new ControllerError(`controller has no operation ${id}`);
  emit(opts, op, (o) => operationLine(o));
  if (op.state === 'failed') throw new ControllerError(`operation ${id} failed${op.step ? ` at step "${op.step}"` : ''}: ${op.error || 'no reason given'}`);
  if (op.state !== 'done') throw new ControllerError(`operation ${id} is still ${op.state || 'running'}; follow it with: mxswitch operation follow ${id}`);
}

/** "5s ago", or "never" for a zero timestamp. */
export const ago = (ms: number, now = Date.now()) => (ms > 0 ? `${formatDuration(Math.max(0, now - ms))} ago` : 'never');

/** One line per operation (`operation show`, `status`, `watch`): id, what, state, step, exclusions, when, error. */
export function operationLine(op: Operation, now = Date.now()): string {
  const when = op.finishedAtMs ? `finished ${ago(op.finishedAtMs, now)}` : `started ${ago(op.startedAtMs, now)}`;
  const excluded = op.excluded.length ? ` excluding ${op.excluded.join(', ')}` : '';
  const step = op.step && op.state !== 'done' ? ` (step ${op.step})` : '';
  return `${op.id}  ${describeOperation(op)}  ${op.state}${step}${excluded}, ${when}${op.error ? `: ${op.error}` : ''}`;
}
