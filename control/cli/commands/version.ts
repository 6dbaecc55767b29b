import type { Command } from 'commander';
import { buildInfo, type BuildInfo } from '../../../shared/version.js';
import { emit } from '../output.js';

/** `mxswitch --version` / `-V`: the package version and the commit it was built from; `--json` for scripts. */
export function registerVersion(program: Command): void {
  program.option('-V, --version', 'print the version and the git commit it was built from, then exit (with --json: as JSON, with the Node.js version)');
  // Commander fires this while it parses, before it would refuse `--json` as an option the program itself lacks
  // (every command has its own --json), so the flag is looked for in the arguments.
  program.on('option:version', () => {
    emit({ json: process.argv.slice(2).includes('--json') }, buildInfo(), renderVersion);
    process.exit(0);
  });
}

function renderVersion(info: BuildInfo): string {
  return `mxswitch ${info.version}${info.commit ? ` (${info.commit})` : ''}`;
}
