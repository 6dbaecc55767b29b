import { Command, Option } from 'commander';
import { UsageError } from '../../shared/errors.js';
import { addConnectionOptions, CONNECTION_HELP } from './admin-client.js';
import { registerDnsCommand } from './dns-command.js';
import { checkDuration, collectIds } from './args.js';
import * as fleet from './fleet.js';
import { action, emit, fail } from './output.js';
import type { LocalQueueOptions } from './queue-local.js';

// Heavy modules (agent, controller, local queue database) are imported when their command runs, so operator
// commands start fast and do not load SQLite.

const program = new Command('mxswitch')
  .description('Move a domain\'s mail to a new server with no downtime: relay agents on the MX hosts, one controller, this CLI.')
  .showHelpAfterError()
  .configureOutput({ outputError: (str, write) => write(str) })
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .addHelpText(
    'after',
    `
Exit status of operator commands: 0 = done and verified on every expected agent; 1 = failed or not verified
(one line on stderr naming the agents); 2 = bad arguments (nothing was sent). Run \`mxswitch COMMAND --help\`.`,
  );

/** Wraps each paragraph line of a help epilogue at `width` columns (commander wraps only its own sections). */
function wrap(text: string, width = 110): string {
  return text
    .split('\n')
    .map((line) => {
      const out: string[] = [];
      let cur = '';
      for (const word of line.split(' ')) {
        if (cur && cur.length + 1 + word.length > width) {
          out.push(cur);
          cur = `  ${word}`;
        } else cur = cur ? `${cur} ${word}` : word;
      }
      out.push(cur);
      return out.join('\n');
    })
    .join('\n');
}

/** Help epilogue: what the command waits for, its progress output and what its exit status means. */
function exitHelp(waits: string, ok: string, failed: string, progress = false): string {
  return wrap(`
Waits for: ${waits}${progress ? PROGRESS_HELP : ''}
Exit status: 0 = ${ok}; 1 = ${failed} (one line on stderr); 2 = bad arguments (nothing was sent to the controller).
${CONNECTION_HELP}`);
}

const OP_FAIL = 'an agent nacked, timed out or is disconnected, or the controller refused or could not be reached (the line names the agents)';
const PROGRESS_HELP = `
Progress: on a terminal one status line shows which agents have acked and which are pending, plus a line per completed step; otherwise one plain line per progress event; with --json one JSON object per progress event (NDJSON, "type":"progress") and a final {"type":"result","ok":...} object. Ctrl-C detaches: the operation continues on the controller (re-attach with \`mxswitch operation follow ID\`).`;

/** Command with the connection flags, --json and an exit-status epilogue. */
function operator(parent: Command, name: string, description: string, help: string): Command {
  return addConnectionOptions(parent.command(name).description(description)).addHelpText('after', help);
}

/** --timeout and --exclude of the waiting steps. */
function waitOptions(cmd: Command): Command {
  return cmd
    .option('--timeout <duration>', 'give up waiting for acks after this long (e.g. 30s, 5m; default: the controller\'s)')
    .option('--exclude <id>', 'do not wait for this agent (repeatable, or comma-separated); needed to proceed while an expected agent is disconnected', collectIds);
}

// ---------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------

const agentCmd = program
  .command('agent')
  .description('Run a relay agent (--config FILE): SMTP in, durable SQLite queue, delivery to each route\'s next hop. `agent rm ID` forgets an agent on the controller.')
  .option('-c, --config <file>', 'agent YAML config (see README "Agent configuration")')
  .addHelpText(
    'after',
    `
Runs until stopped. Signals: SIGTERM/SIGINT stop gracefully (421 to new sessions); SIGHUP reloads static routes.
Control plane: controller.grpc (a session to the controller) or controller.nats (routes from a JetStream KV bucket,
acks/health to another, commands by request/reply); without either the config's routes are the table. When the
control plane is unreachable the agent keeps relaying with the last applied table.
Exit status: 0 = stopped cleanly; 1 = failed at run time; 2 = config invalid or --config missing (the message names the key).`,
  )
  .action(
    action(async (opts: { config?: string }) => {
      if (!opts.config) throw new UsageError('agent: --config FILE is required to run an agent (or `mxswitch agent rm ID` to forget one)');
      const { runAgent } = await import('../../agent/main.js');
      await runAgent(opts.config);
    }),
  );

operator(
  agentCmd,
  'rm',
  'Forget an agent on the controller: operations stop waiting for it (it is no longer expected). Use after decommissioning an MX host.',
  exitHelp('the controller to record the removal (one call).', 'the agent was removed', 'unknown agent, or the controller refused or could not be reached'),
)
  .argument('<id>', 'agent id (as shown by `mxswitch status`)')
  .action(action(fleet.agentRm));

program
  .command('controller')
  .description(
    'Run the controller: route store, agent registry, coordinated operations and the admin gRPC API. Agents connect over gRPC (state in SQLite under dataDir) or, with `nats` in the config, over NATS JetStream (state in KV buckets: no local state, several replicas may run).',
  )
  .requiredOption('-c, --config <file>', 'controller YAML config (see README "Controller configuration")')
  .addHelpText(
    'after',
    `
Runs until stopped (SIGTERM/SIGINT). Exit status: 0 = stopped cleanly; 1 = failed at run time; 2 = config invalid (the message names the key).`,
  )
  .action(
    action(async (opts: { config: string }) => {
      const { runController } = await import('../main.js');
      await runController(opts.config);
    }),
  );

program
  .command('demo')
  .description(
    'A whole migration on loopback, safely, in under a minute: a controller, N agents, an "old" and a "new" mail server and steady traffic; forward to old -> hold -> switchover to new -> drain -> verification.',
  )
  .option('--agents <n>', 'number of agents ("regions")', '3')
  .option('--rate <r>', 'messages per second sent to the agents in turn', '40')
  .option('--duration <duration>', 'length of the traffic phases (forward, hold, switchover) together', '12s')
  .option('--keep', 'leave every process running at the end and print how to send mail and drive it (Ctrl-C stops them)')
  .option('--json', 'the final report as one JSON document (no progress lines)')
  .addHelpText(
    'after',
    `
Everything runs in a temporary directory on 127.0.0.1 with the embedded defaults (SQLite, gRPC) as real processes.
Exit status: 0 = nothing lost and nothing reached "old" after the hold was acknowledged by every agent; 1 = otherwise
(the report says what); 2 = bad arguments.`,
  )
  .action(
    action(async (opts: { agents: string; rate: string; duration: string; keep?: boolean; json?: boolean }) => {
      const agents = Number(opts.agents);
      const rate = Number(opts.rate);
      if (!Number.isInteger(agents) || agents < 1 || agents > 20) throw new UsageError(`--agents ${opts.agents}: expected an integer from 1 to 20`);
      if (!(rate > 0 && rate <= 2000)) throw new UsageError(`--rate ${opts.rate}: expected messages per second, more than 0 and at most 2000`);
      const durationMs = checkDuration('--duration', opts.duration)!;
      const { runDemo, renderReport } = await import('../demo/run.js');
      const report = await runDemo({ agents, rate, durationMs, keep: opts.keep ?? false, json: opts.json ?? false });
      emit(opts, report, renderReport);
      if (!report.ok) process.exitCode = 1;
    }),
  );

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

const GROUP_HELP = '\nExit status (details in each subcommand\'s --help): 0 = done and verified; 1 = failed (one line on stderr); 2 = bad arguments.';

const route = program.command('route').description('Read and change the routing table on the controller (every agent applies it).').addHelpText('after', GROUP_HELP);

operator(route, 'ls', 'List the routing table: MATCH, TARGET, hold flag, TLS policy, and the table version.', exitHelp('one answer from the controller.', 'listed', 'the controller refused or could not be reached')).action(
  action(fleet.routeLs),
);

operator(
  route,
  'set',
  'Create or replace the route for MATCH: deliver its mail to TARGET (smtp:[host]:port = no MX lookup, smtp:host:port = MX lookup).',
  exitHelp(
    'the controller to store the new table version; with --wait also until every expected agent has applied it.',
    'stored (and with --wait applied by every expected agent)',
    'the version did not match --expect-version, or (--wait) an agent did not apply it in time, or the controller refused or could not be reached',
  ),
)
  .argument('<match>', 'address (alice@example.com), domain (example.com) or domain with subdomains (.example.com)')
  .argument('<target>', 'smtp:[host]:port or smtp:host:port')
  .option('--hold', 'accept and keep mail for MATCH, do not deliver it')
  .addOption(new Option('--tls <policy>', 'delivery TLS: required (never plaintext) or may (opportunistic STARTTLS)').choices(['required', 'may']).default('may'))
  .option('--expect-version <n>', 'compare-and-set: only change the table if it is still at this version')
  .option('--wait', 'wait until every expected agent has applied the new version')
  .option('--timeout <duration>', 'with --wait: give up after this long (default 30s)')
  .action(action(fleet.routeSet));

operator(
  route,
  'rm',
  'Remove the route for MATCH: its recipients are then refused (550 5.7.1) unless a less specific route covers them.',
  exitHelp(
    'the controller to store the new table version; with --wait also until every expected agent has applied it.',
    'removed (and with --wait applied by every expected agent)',
    'no such route, version mismatch, (--wait) an agent did not apply it in time, or the controller refused or could not be reached',
  ),
)
  .argument('<match>', 'the route\'s MATCH')
  .option('--expect-version <n>', 'compare-and-set: only change the table if it is still at this version')
  .option('--wait', 'wait until every expected agent has applied the new version')
  .option('--timeout <duration>', 'with --wait: give up after this long (default 30s)')
  .action(action(fleet.routeRm));

// ---------------------------------------------------------------------------
// Coordinated operations
// ---------------------------------------------------------------------------

waitOptions(
  operator(
    program,
    'hold',
    'Coordinated hold: every agent keeps accepting mail for MATCH but stops delivering it (held mail does not age).',
    exitHelp('every expected agent to ack the table version with MATCH held; after an agent\'s ack it attempts no held mail.', 'held and acked by every expected agent', OP_FAIL, true),
  ),
)
  .argument('<match>', 'the route\'s MATCH (address, domain or .parent-domain)')
  .action(action(fleet.hold));

waitOptions(
  operator(
    program,
    'release',
    'Coordinated release: every agent resumes delivering mail for MATCH (held mail becomes due at once).',
    exitHelp('every expected agent to ack the table version with MATCH released.', 'released and acked by every expected agent', OP_FAIL, true),
  ),
)
  .argument('<match>', 'the route\'s MATCH')
  .action(action(fleet.release));

waitOptions(
  operator(
    program,
    'switchover',
    'Coordinated re-route of MATCH to a new server: hold everywhere, re-point to --to everywhere, release, flush. A failure leaves MATCH held (safe).',
    exitHelp(
      'each step\'s acks from every expected agent (hold, re-point, release, flush); with --wait-drained also until every agent reports zero queued for MATCH (then prints per-agent delivered counts).',
      'every step done and verified on every expected agent',
      OP_FAIL,
      true,
    ),
  ),
)
  .argument('<match>', 'the route\'s MATCH')
  .requiredOption('--to <target>', 'new TARGET: smtp:[host]:port or smtp:host:port')
  .option('--wait-drained', 'after the release, wait until the queue for MATCH is empty on every agent')
  .action(action(fleet.switchover));

waitOptions(
  operator(
    program,
    'flush',
    'Deliver now whatever is queued or deferred for MATCH (all routes without MATCH) on every agent.',
    exitHelp('every expected agent to report that it has made the mail due (not that it was delivered).', 'every expected agent flushed', OP_FAIL, true),
  ),
)
  .argument('[match]', 'the route\'s MATCH (default: all routes)')
  .action(action(fleet.flush));

const operation = program.command('operation').description('Coordinated operations (hold, release, switchover, flush) kept by the controller.').addHelpText('after', GROUP_HELP);

operator(
  operation,
  'follow',
  'Re-attach to an operation (e.g. after Ctrl-C or a lost connection) and show its progress until it ends.',
  exitHelp('the operation to finish.', 'the operation finished and is verified on every expected agent', 'the operation failed (naming the agents), is unknown, or the controller could not be reached', true),
)
  .argument('<id>', 'operation id (shown in progress output and by `mxswitch status`)')
  .action(action(fleet.operationFollow));

operator(
  operation,
  'show',
  'Show one operation: kind, match, state, current step, error.',
  exitHelp('one answer from the controller.', 'the operation is done', 'it failed, is still running or unknown, or the controller could not be reached'),
)
  .argument('<id>', 'operation id')
  .action(action(fleet.operationShow));

// ---------------------------------------------------------------------------
// Fleet state
// ---------------------------------------------------------------------------

operator(
  program,
  'status',
  'The fleet: each agent\'s region, connection, applied table version, queue (total, held, deferred, oldest), delivered/deferred/bounced counters and last error; the table version and running operations.',
  exitHelp(
    'one answer from the controller (a snapshot).',
    'every expected agent is connected and has applied the current table version',
    'an expected agent is disconnected/lost or behind (named), or the controller could not be reached',
  ),
).action(action(fleet.status));

operator(
  program,
  'watch',
  'Live health stream: one line per agent, operation or routing-table change (NDJSON with --json), until Ctrl-C.',
  exitHelp('events until Ctrl-C.', 'stopped with Ctrl-C', 'the controller could not be reached or closed the stream'),
).action(action(fleet.watch));

// ---------------------------------------------------------------------------
// Queues: local (--data-dir) or fleet-wide through the controller (--agent)
// ---------------------------------------------------------------------------

const queue = program
  .command('queue')
  .description('Inspect and repair queues (like postqueue/postsuper): on one agent\'s local queue file with --data-dir (also while it runs), otherwise fleet-wide through the controller (--agent ID for one agent).')
  .addHelpText('after', GROUP_HELP);

const dataDir = () => new Option('-d, --data-dir <dir>', 'the agent\'s dataDir: work on the local queue file instead of through the controller').env('MXSWITCH_DATA_DIR');
const agentOpt = () => new Option('--agent <id>', 'through the controller: only this agent (default: every expected agent)');
const queueTimeout = () => new Option('--timeout <duration>', 'through the controller: give up waiting for agents after this long');
const QUEUE_HELP = (ok: string) =>
  exitHelp(
    'with --data-dir: nothing (local file); otherwise one answer per targeted agent, collected by the controller.',
    ok,
    'the message is unknown, or an agent failed or did not answer (named), or the controller could not be reached',
  ) + '\nResults: with --data-dir the local result; otherwise one result per agent ({"results":[{"agent","ok","error","result"}]} with --json).';

type QueueOpts = LocalQueueOptions & fleet.FleetQueueOptions;

function local(opts: QueueOpts): boolean {
  if (opts.dataDir && opts.agent !== undefined) throw new UsageError('--data-dir and --agent exclude each other (local file or through the controller)');
  return Boolean(opts.dataDir);
}
const localQueue = async () => (await import('./queue-local.js')).localQueue;
function requireDataDir(opts: LocalQueueOptions, cmd: string): LocalQueueOptions {
  if (!opts.dataDir) throw new UsageError(`queue ${cmd}: --data-dir DIR is required (the agent's dataDir); fleet-wide use \`mxswitch hold\`/\`release\``);
  return opts;
}

operator(queue, 'ls', 'List queued messages: id, age, size, sender, recipients with state, next attempt, last reply.', QUEUE_HELP('listed'))
  .addOption(dataDir())
  .addOption(agentOpt())
  .option('-m, --match <match>', 'only recipients under this route match (address, domain or .parent)')
  .addOption(new Option('-s, --state <state>', 'only recipients in this state').choices(['queued', 'deferred', 'inflight', 'held']))
  .option('-n, --limit <n>', 'at most this many messages (per agent)')
  .addOption(queueTimeout())
  .action(action(async (opts: QueueOpts) => (local(opts) ? (await localQueue()).ls(opts) : fleet.fleetQueue.ls(opts))));

operator(queue, 'show', 'Show one message: envelope, per-recipient state and its headers.', QUEUE_HELP('shown'))
  .argument('<id>', 'queue id')
  .addOption(dataDir())
  .addOption(agentOpt())
  .addOption(queueTimeout())
  .action(action(async (id: string, opts: QueueOpts) => (local(opts) ? (await localQueue()).show(id, opts) : fleet.fleetQueue.show(id, opts))));

operator(queue, 'rm', 'Delete a message from the queue (all its recipients). It will not be delivered or bounced.', QUEUE_HELP('removed'))
  .argument('<id>', 'queue id')
  .addOption(dataDir())
  .addOption(agentOpt())
  .addOption(queueTimeout())
  .action(action(async (id: string, opts: QueueOpts) => (local(opts) ? (await localQueue()).rm(id, opts) : fleet.fleetQueue.rm(id, opts))));

operator(queue, 'retry', 'Make a deferred message (or all deferred mail with --all) due now.', QUEUE_HELP('made due'))
  .argument('[id]', 'queue id')
  .option('--all', 'every deferred recipient')
  .addOption(dataDir())
  .addOption(agentOpt())
  .addOption(queueTimeout())
  .action(action(async (id: string | undefined, opts: QueueOpts) => (local(opts) ? (await localQueue()).retry(id, opts) : fleet.fleetQueue.retry(id, opts))));

queue
  .command('hold')
  .description('Local operator hold (postsuper -h) on one agent\'s queue file: queued mail under MATCH is kept and not attempted until released. Fleet-wide: `mxswitch hold`.')
  .argument('<match>', 'address, domain or .parent-domain')
  .addOption(dataDir())
  .addOption(new Option('--json', 'machine-readable output'))
  .addHelpText('after', '\nExit status: 0 = held (count printed); 1 = the queue file could not be changed; 2 = bad arguments or no --data-dir.')
  .action(action(async (match: string, opts: LocalQueueOptions) => (await localQueue()).hold(match, requireDataDir(opts, 'hold'))));

queue
  .command('release')
  .description('Release a local operator hold on one agent\'s queue file: the recipients become due at once. Fleet-wide: `mxswitch release`.')
  .argument('<match>', 'address, domain or .parent-domain')
  .addOption(dataDir())
  .addOption(new Option('--json', 'machine-readable output'))
  .addHelpText('after', '\nExit status: 0 = released (count printed); 1 = the queue file could not be changed; 2 = bad arguments or no --data-dir.')
  .action(action(async (match: string, opts: LocalQueueOptions) => (await localQueue()).release(match, requireDataDir(opts, 'release'))));

registerDnsCommand(program);

await program.parseAsync(process.argv).catch(fail);
