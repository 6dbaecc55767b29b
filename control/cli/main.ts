#!/usr/bin/env node
import { Command } from 'commander';
import { registerAudit } from './commands/audit.js';
import { registerDaemons } from './commands/daemons.js';
import { registerDnsCommand } from './commands/dns.js';
import { registerFleetStatus } from './commands/fleet-status.js';
import { registerOperations } from './commands/operations.js';
import { registerQueue } from './commands/queue.js';
import { registerRecipients } from './commands/recipients.js';
import { registerRoutes } from './commands/routes.js';
import { registerVersion } from './commands/version.js';
import { fail } from './output.js';

/** The `mxswitch` command: the program and its commands, one module per group under commands/. */

const program = new Command('mxswitch')
  .description('Move a domain\'s mail to a new server with no downtime: relay agents on the MX hosts, one controller, this CLI.')
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .addHelpText(
    'after',
    `
Exit status of operator commands: 0 = done and verified on every expected agent; 1 = failed or not verified
(one line on stderr naming the agents); 2 = bad arguments (nothing was sent). Run \`mxswitch COMMAND --help\`.`,
  );

registerVersion(program);

// The order here is the order of `mxswitch --help`.
const { agent } = registerDaemons(program);
registerRoutes(program);
registerOperations(program);
registerAudit(program);
registerFleetStatus(program, agent);
registerQueue(program);
registerRecipients(program);
registerDnsCommand(program);

/**
 * A usage error as one line that says where to read more ("mxswitch route set: missing required argument
 * 'match'; see `mxswitch route set --help`"), exit 2; not the whole help, which buries the error.
 */
function oneLineUsageErrors(cmd: Command, path: string): void {
  cmd.configureOutput({ outputError: (str, write) => write(`${path}: ${str.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')}; see \`${path} --help\`\n`) });
  for (const sub of cmd.commands) oneLineUsageErrors(sub, `${path} ${sub.name()}`);
}
oneLineUsageErrors(program, 'mxswitch');

await program.parseAsync(process.argv).catch(fail);
