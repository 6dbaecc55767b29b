// The `mxswitch` program with only the dns command registered, the way control/cli/main.ts sets up commander
// (a usage error exits 2), so the command's tests do not depend on the rest of the CLI.
import { Command } from 'commander';
import { registerDnsCommand } from '../../control/cli/dns-command.js';

const program = new Command('mxswitch')
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
registerDnsCommand(program);
await program.parseAsync(process.argv);
