import type { Command } from 'commander';
import { addConnectionOptions, CONNECTION_HELP, type ConnectionOptions } from '../admin-client.js';
import { collectIds } from '../args.js';
import type { OutputOptions } from '../output.js';

/** Building blocks of the command modules: operator commands (connection flags, --json) and their help epilogues. */

/** The options of every operator command: how to reach the controller, and --json. */
export type CommonOptions = ConnectionOptions & OutputOptions;

/** Epilogue of a command group (route, operation, queue). */
export const GROUP_HELP = '\nExit status (details in each subcommand\'s --help): 0 = done and verified; 1 = failed (one line on stderr); 2 = bad arguments.';

const PROGRESS_HELP = `
Progress: on a terminal one status line shows which agents have acked and which are pending, plus a line per completed step; otherwise one plain line per progress event; with --json one JSON object per progress event (NDJSON, "type":"progress") and a final {"type":"result","ok":...} object. Ctrl-C detaches: the operation continues on the controller (re-attach with \`mxswitch operation follow ID\`).`;

/** Wraps each paragraph line of a help epilogue at `width` columns (commander wraps only its own sections). */
export function wrap(text: string, width = 110): string {
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
export function exitHelp(waits: string, ok: string, failed: string, progress = false): string {
  return wrap(`
Waits for: ${waits}${progress ? PROGRESS_HELP : ''}
Exit status: 0 = ${ok}; 1 = ${failed} (one line on stderr); 2 = bad arguments (nothing was sent to the controller).
${CONNECTION_HELP}`);
}

/** Command with the connection flags, --json and an exit-status epilogue. */
export function operator(parent: Command, name: string, description: string, help: string): Command {
  return addConnectionOptions(parent.command(name).description(description)).addHelpText('after', help);
}

/** --timeout and --exclude of the waiting steps. */
export function waitOptions(cmd: Command): Command {
  return cmd
    .option('--timeout <duration>', 'give up waiting for acks after this long (e.g. 30s, 5m; default: the controller\'s)')
    .option('--exclude <id>', 'do not wait for this agent (repeatable, or comma-separated); needed to proceed while an expected agent is disconnected', collectIds);
}
