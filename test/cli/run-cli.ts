// The CLI tests' helpers. Starting the CLI lives in one place, test/helpers/process.ts (re-exported here).
export { collect, runCli, spawnCli, type CliResult } from '../helpers/process.js';

/** Lines of `text` as parsed JSON objects (NDJSON). */
export function ndjson(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
