import { Option, type Command } from 'commander';
import type { BulkAction } from '../../../agent/queue-ops.js';
import { UsageError } from '../../../shared/errors.js';
import { QUEUE_STATES } from '../args.js';
import { action } from '../output.js';
import { exitHelp, GROUP_HELP, operator } from './common.js';
import type { QueueBackend, QueueOptions } from './queue-backend.js';
import { fleetQueue } from './queue-fleet.js';

/**
 * `queue ls|show|rm|retry|hold|release` (like postqueue/postsuper): fleet-wide through the controller (--agent ID
 * for one agent), or on one agent's local queue file with --data-dir. `onQueue` makes that choice for every
 * subcommand; the local side (SQLite) is imported only when it is chosen.
 */

const localQueue = async (dataDir: string) => (await import('./queue-local.js')).localQueue(dataDir);

/** Runs a queue subcommand on the local queue file (--data-dir) or through the controller. */
async function onQueue(opts: QueueOptions, run: (q: QueueBackend) => Promise<void> | void): Promise<void> {
  if (opts.dataDir && opts.agent !== undefined) throw new UsageError('--data-dir and --agent exclude each other (local file or through the controller)');
  await run(opts.dataDir ? await localQueue(opts.dataDir) : fleetQueue);
}

/** `queue rm|retry|hold|release`: what each does to the mail it selects. */
const CHANGES: { name: string; action: BulkAction; description: string; done: string }[] = [
  {
    name: 'rm',
    action: 'remove',
    description: 'Delete a message, or the recipients a selection picks (postsuper -d), in any state. They will not be delivered or bounced: an operator delete is the only way mail leaves the queue without either.',
    done: 'removed',
  },
  {
    name: 'retry',
    action: 'retry',
    description: 'Make deferred mail due now: one message, every deferred recipient (--all), or those a selection picks (postqueue -i / -f).',
    done: 'made due',
  },
  {
    name: 'hold',
    action: 'hold',
    description: 'Operator hold (postsuper -h): the waiting (queued or deferred) recipients picked are kept and not attempted, whatever the routes say, until `queue release`; in-flight ones finish their attempt first. Hold time does not count toward expiry. For a destination use `mxswitch hold MATCH` (a route hold, acknowledged by every agent).',
    done: 'held',
  },
  {
    name: 'release',
    action: 'release',
    description: 'Release operator holds (postsuper -H): the recipients picked become due at once. A route\'s hold is never released here (that is `mxswitch release MATCH`).',
    done: 'released',
  },
];

const dataDirOption = () => new Option('-d, --data-dir <dir>', 'the agent\'s dataDir: work on the local queue file instead of through the controller').env('MXSWITCH_DATA_DIR');

/** --data-dir, --agent, the command's own filters, --timeout: where a queue subcommand runs. */
function targetOptions(cmd: Command, filters: (c: Command) => Command = (c) => c): Command {
  return filters(
    cmd.addOption(dataDirOption()).addOption(new Option('--agent <id>', 'through the controller: only this agent (default: every expected agent)')),
  ).addOption(new Option('--timeout <duration>', 'through the controller: give up waiting for agents after this long'));
}

/** The selection flags (every one given must hold), shared by ls and the changes. */
function selectionOptions(cmd: Command): Command {
  return cmd
    .option('--all', 'every message: a change needs an ID, --all or one of the filters below (beside a filter --all adds nothing)')
    .option('-m, --match <match>', 'only recipients under this route match (address, domain or .parent)')
    .addOption(new Option('-s, --state <state>', 'only recipients in this state').choices(QUEUE_STATES))
    .option('--sender <address>', 'only messages from this envelope sender (\'<>\' = bounces, the null sender)')
    .option('--older-than <duration>', 'only messages that arrived at least this long ago (e.g. 30m, 2d)');
}

/** `byId`: the command can name one message (show, and a change given an ID), which may be unknown. */
const queueHelp = (ok: string, byId = true) =>
  exitHelp(
    'with --data-dir: nothing (local file); otherwise one answer per targeted agent, collected by the controller.',
    ok,
    `${byId ? 'the message is unknown, or ' : ''}an agent failed or did not answer (named), or the controller could not be reached`,
  ) + '\nResults: with --data-dir the local result; otherwise one result per agent ({"results":[{"agent","ok","error","result"}]} with --json).';

const changeHelp = (done: string) =>
  queueHelp(`${done} (each agent prints how many recipients of how many messages; with --dry-run how many it would touch)`) +
  '\nResult: {"action","dryRun","recipients","messages"} (per agent through the controller). Examples: `--all --state deferred` (postsuper -d ALL deferred), `--match example.com --older-than 2d`, `--sender \'<>\' --dry-run`.';

/** Adds the `queue` group. */
export function registerQueue(program: Command): void {
  const queue = program
    .command('queue')
    .description('Inspect and repair queues (like postqueue/postsuper): fleet-wide through the controller by default (--agent ID for one agent), or on one agent\'s local queue file with --data-dir (also while it runs).')
    .addHelpText('after', GROUP_HELP);

  targetOptions(operator(queue, 'ls', 'List queued messages: id, age, size, sender, recipients with state, next attempt, last reply; then a mailq-style summary.', queueHelp('listed', false) + '\nResult: {"entries":[{"id","sender","arrivedAt","ageSeconds","size","recipients":[...]}],"more"} (per agent through the controller).'), (c) =>
    selectionOptions(c)
      .option('-n, --limit <n>', 'at most this many messages per agent, oldest first; the summary line says how many more there are')
      .option('--shadow', 'list the shadow copies each agent keeps for other agents (shadow redundancy) instead of its queue: origin agent, id, age, size, sender, recipients still queued there; the selection flags do not apply'),
  ).action(action((opts: QueueOptions) => onQueue(opts, (q) => q.ls(opts))));

  targetOptions(
    operator(
      queue,
      'shape',
      'qshape for the fleet: queued recipients by domain (rows, largest first) and by message age in minutes (columns 5, 10, 20 ... 1280+), summed over every agent that answered; a destination that stopped taking mail fills the right-hand columns. The selection flags narrow it (e.g. --state deferred).',
      queueHelp('shown', false) + '\nResult: {"bucketsMinutes":[5,...],"rows":[{"domain","total","counts":[...]}]} (per agent through the controller).',
    ),
    selectionOptions,
  ).action(action((opts: QueueOptions) => onQueue(opts, (q) => q.shape(opts))));

  targetOptions(
    operator(queue, 'show', 'Show one message: envelope, per-recipient state and its headers (with --body the stored message, like postcat -q).', queueHelp('shown'))
      .argument('<id>', 'queue id')
      .option('--body', 'the whole stored message instead of its headers (its first 512 KiB; --json: base64)'),
  ).action(
    action((id: string, opts: QueueOptions) => onQueue(opts, (q) => q.show(id, opts))),
  );

  for (const c of CHANGES) {
    targetOptions(operator(queue, c.name, c.description, changeHelp(c.done)).argument('[id]', 'queue id (or select with the flags)'), (cmd) =>
      selectionOptions(cmd).option('--dry-run', 'count what would be touched (per agent); change nothing'),
    ).action(action((id: string | undefined, opts: QueueOptions) => onQueue(opts, (q) => q.change(c.action, id, opts))));
  }
}
