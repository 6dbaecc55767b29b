import { Option, type Command } from 'commander';
import { UsageError } from '../../../shared/errors.js';
import { QUEUE_STATES } from '../args.js';
import { action, type OutputOptions } from '../output.js';
import { exitHelp, GROUP_HELP, operator } from './common.js';
import type { QueueBackend, QueueOptions } from './queue-backend.js';
import { fleetQueue } from './queue-fleet.js';

/**
 * `queue ls|show|rm|retry|hold|release` (like postqueue/postsuper): on one agent's local queue file with --data-dir,
 * otherwise fleet-wide through the controller (--agent ID for one agent). `onQueue` makes that choice for every
 * subcommand; the local side (SQLite) is imported only when it is chosen.
 */

type LocalOptions = OutputOptions & { dataDir?: string };

const localQueue = async (dataDir: string) => (await import('./queue-local.js')).localQueue(dataDir);

/** Runs a queue subcommand on the local queue file (--data-dir) or through the controller. */
async function onQueue(opts: QueueOptions, run: (q: QueueBackend) => Promise<void> | void): Promise<void> {
  if (opts.dataDir && opts.agent !== undefined) throw new UsageError('--data-dir and --agent exclude each other (local file or through the controller)');
  await run(opts.dataDir ? await localQueue(opts.dataDir) : fleetQueue);
}

function requireDataDir(opts: LocalOptions, cmd: string): string {
  if (!opts.dataDir) throw new UsageError(`queue ${cmd}: --data-dir DIR is required (the agent's dataDir); fleet-wide use \`mxswitch hold\`/\`release\``);
  return opts.dataDir;
}

const dataDirOption = () => new Option('-d, --data-dir <dir>', 'the agent\'s dataDir: work on the local queue file instead of through the controller').env('MXSWITCH_DATA_DIR');

/** --data-dir, --agent, the command's own filters, --timeout: where a queue subcommand runs. */
function targetOptions(cmd: Command, filters: (c: Command) => Command = (c) => c): Command {
  return filters(
    cmd.addOption(dataDirOption()).addOption(new Option('--agent <id>', 'through the controller: only this agent (default: every expected agent)')),
  ).addOption(new Option('--timeout <duration>', 'through the controller: give up waiting for agents after this long'));
}

const queueHelp = (ok: string) =>
  exitHelp(
    'with --data-dir: nothing (local file); otherwise one answer per targeted agent, collected by the controller.',
    ok,
    'the message is unknown, or an agent failed or did not answer (named), or the controller could not be reached',
  ) + '\nResults: with --data-dir the local result; otherwise one result per agent ({"results":[{"agent","ok","error","result"}]} with --json).';

/** Adds the `queue` group. */
export function registerQueue(program: Command): void {
  const queue = program
    .command('queue')
    .description('Inspect and repair queues (like postqueue/postsuper): on one agent\'s local queue file with --data-dir (also while it runs), otherwise fleet-wide through the controller (--agent ID for one agent).')
    .addHelpText('after', GROUP_HELP);

  targetOptions(operator(queue, 'ls', 'List queued messages: id, age, size, sender, recipients with state, next attempt, last reply.', queueHelp('listed')), (c) =>
    c
      .option('-m, --match <match>', 'only recipients under this route match (address, domain or .parent)')
      .addOption(new Option('-s, --state <state>', 'only recipients in this state').choices(QUEUE_STATES))
      .option('-n, --limit <n>', 'at most this many messages (per agent)'),
  ).action(action((opts: QueueOptions) => onQueue(opts, (q) => q.ls(opts))));

  targetOptions(
    operator(queue, 'show', 'Show one message: envelope, per-recipient state and its headers (with --body the stored message, like postcat -q).', queueHelp('shown'))
      .argument('<id>', 'queue id')
      .option('--body', 'the whole stored message instead of its headers (its first 512 KiB; --json: base64)'),
  ).action(
    action((id: string, opts: QueueOptions) => onQueue(opts, (q) => q.show(id, opts))),
  );

  targetOptions(operator(queue, 'rm', 'Delete a message from the queue (all its recipients). It will not be delivered or bounced.', queueHelp('removed')).argument('<id>', 'queue id')).action(
    action((id: string, opts: QueueOptions) => onQueue(opts, (q) => q.rm(id, opts))),
  );

  targetOptions(
    operator(queue, 'retry', 'Make a deferred message (or all deferred mail with --all) due now.', queueHelp('made due')).argument('[id]', 'queue id').option('--all', 'every deferred recipient'),
  ).action(action((id: string | undefined, opts: QueueOptions) => onQueue(opts, (q) => q.retry(id, opts))));

  localOnly(queue, 'hold', 'Local operator hold (postsuper -h) on one agent\'s queue file: queued mail under MATCH is kept and not attempted until released. Fleet-wide: `mxswitch hold`.', 'held');
  localOnly(queue, 'release', 'Release a local operator hold on one agent\'s queue file: the recipients become due at once. Fleet-wide: `mxswitch release`.', 'released');
}

/** `queue hold|release MATCH`: only on the local queue file (fleet-wide they are `mxswitch hold|release`). */
function localOnly(queue: Command, name: 'hold' | 'release', description: string, done: string): void {
  queue
    .command(name)
    .description(description)
    .argument('<match>', 'address, domain or .parent-domain')
    .addOption(dataDirOption())
    .addOption(new Option('--json', 'machine-readable output'))
    .addHelpText('after', `\nExit status: 0 = ${done} (count printed); 1 = the queue file could not be changed; 2 = bad arguments or no --data-dir.`)
    .action(action(async (match: string, opts: LocalOptions) => (await localQueue(requireDataDir(opts, name)))[name](match, opts)));
}
