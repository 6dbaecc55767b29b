import { Command, Option } from 'commander';
import { runAgent } from '../../agent/main.js';
import { UsageError } from '../../shared/errors.js';
import { action } from './output.js';
import { localQueue, type LocalQueueOptions } from './queue-local.js';

const program = new Command('mxswitch')
  .description('Move a domain\'s mail to a new server with no downtime: relay agents on the MX hosts, one controller, this CLI.')
  .showHelpAfterError()
  .configureOutput({ outputError: (str, write) => write(str) })
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

program
  .command('agent')
  .description('Run a relay agent: SMTP in, durable SQLite queue, delivery to each route\'s next hop.')
  .requiredOption('-c, --config <file>', 'agent YAML config (see README "Agent configuration")')
  .addHelpText('after', '\nSignals: SIGTERM/SIGINT stop gracefully (421 to new sessions); SIGHUP reloads static routes.\nExit 2: config invalid (the message names the key).')
  .action(action((opts: { config: string }) => runAgent(opts.config)));

const queue = program
  .command('queue')
  .description('Inspect and repair an agent\'s queue (like postqueue/postsuper). --data-dir works on the local queue file, also while the agent runs.');

const dataDir = () => new Option('-d, --data-dir <dir>', 'the agent\'s dataDir (local queue)').env('MXSWITCH_DATA_DIR');
const json = () => new Option('--json', 'machine-readable output');
function requireDataDir(opts: LocalQueueOptions): LocalQueueOptions {
  if (!opts.dataDir) throw new UsageError('--data-dir DIR is required (the agent\'s dataDir)');
  return opts;
}

queue
  .command('ls')
  .description('List queued messages: id, age, size, sender, recipients with state, next attempt, last reply.')
  .addOption(dataDir())
  .option('-m, --match <match>', 'only recipients under this route match (address, domain or .parent)')
  .addOption(new Option('-s, --state <state>', 'only recipients in this state').choices(['queued', 'deferred', 'inflight', 'held']))
  .option('-n, --limit <n>', 'at most this many messages')
  .addOption(json())
  .action(action((opts: LocalQueueOptions) => localQueue.ls(requireDataDir(opts))));

queue
  .command('show')
  .description('Show one message: envelope, per-recipient state and its headers.')
  .argument('<id>', 'queue id')
  .addOption(dataDir())
  .addOption(json())
  .action(action((id: string, opts: LocalQueueOptions) => localQueue.show(id, requireDataDir(opts))));

queue
  .command('rm')
  .description('Delete a message from the queue (all its recipients). It will not be delivered or bounced.')
  .argument('<id>', 'queue id')
  .addOption(dataDir())
  .addOption(json())
  .action(action((id: string, opts: LocalQueueOptions) => localQueue.rm(id, requireDataDir(opts))));

queue
  .command('retry')
  .description('Make a deferred message (or all deferred mail with --all) due now.')
  .argument('[id]', 'queue id')
  .option('--all', 'every deferred recipient')
  .addOption(dataDir())
  .addOption(json())
  .action(action((id: string | undefined, opts: LocalQueueOptions) => localQueue.retry(id, requireDataDir(opts))));

queue
  .command('hold')
  .description('Operator hold (postsuper -h): queued mail under MATCH is kept and not attempted until released.')
  .argument('<match>', 'address, domain or .parent-domain')
  .addOption(dataDir())
  .addOption(json())
  .action(action((match: string, opts: LocalQueueOptions) => localQueue.hold(match, requireDataDir(opts))));

queue
  .command('release')
  .description('Release an operator hold: the recipients become due at once.')
  .argument('<match>', 'address, domain or .parent-domain')
  .addOption(dataDir())
  .addOption(json())
  .action(action((match: string, opts: LocalQueueOptions) => localQueue.release(match, requireDataDir(opts))));

await program.parseAsync(process.argv);
