import type { Command } from 'commander';
import { UsageError } from '../../../shared/errors.js';
import { checkDuration } from '../args.js';
import { action, emit } from '../output.js';

/**
 * The long-running processes: `agent`, `controller` and `demo`. Their heavy modules (agent, controller, demo, SQLite)
 * are imported when the command runs, so operator commands start fast.
 */

/** Adds `agent`, `controller` and `demo`; returns the `agent` command (its `rm` subcommand talks to the controller). */
export function registerDaemons(program: Command): { agent: Command } {
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
    .action(action(agent));

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
    .action(action(controller));

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
The controller serves the live dashboard meanwhile: its address and the viewer token to log in with are printed
at the start (with --keep it stays up until Ctrl-C).
Exit status: 0 = nothing lost and nothing reached "old" after the hold was acknowledged by every agent; 1 = otherwise
(the report says what); 2 = bad arguments.`,
    )
    .action(action(demo));

  return { agent: agentCmd };
}

async function agent(opts: { config?: string }): Promise<void> {
  if (!opts.config) throw new UsageError('agent: --config FILE is required to run an agent (or `mxswitch agent rm ID` to forget one)');
  const { runAgent } = await import('../../../agent/main.js');
  await runAgent(opts.config);
}

async function controller(opts: { config: string }): Promise<void> {
  const { runController } = await import('../../main.js');
  await runController(opts.config);
}

async function demo(opts: { agents: string; rate: string; duration: string; keep?: boolean; json?: boolean }): Promise<void> {
  const agents = Number(opts.agents);
  const rate = Number(opts.rate);
  if (!Number.isInteger(agents) || agents < 1 || agents > 20) throw new UsageError(`--agents ${opts.agents}: expected an integer from 1 to 20`);
  if (!(rate > 0 && rate <= 2000)) throw new UsageError(`--rate ${opts.rate}: expected messages per second, more than 0 and at most 2000`);
  const durationMs = checkDuration('--duration', opts.duration)!;
  const { runDemo, renderReport } = await import('../../demo/run.js');
  const report = await runDemo({ agents, rate, durationMs, keep: opts.keep ?? false, json: opts.json ?? false });
  emit(opts, report, renderReport);
  if (!report.ok) process.exitCode = 1;
}
