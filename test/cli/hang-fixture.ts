// Run by test/cli/processes.test.ts under `node --test --test-timeout=...`: starts a real `mxswitch agent` child,
// writes its PID to $HANG_PID_FILE and never finishes, so the runner times the file out. The test then checks that the
// agent died with it (no orphan).
import { writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { CliProcess } from '../helpers/process.js';

// node --test takes further arguments for test files: the parameters come in the environment.
const { HANG_PID_FILE: pidFile = '', HANG_CONFIG: config = '', HANG_PORT: port = '' } = process.env;

test('never finishes', async () => {
  const agent = new CliProcess(['agent', '--config', config], Number(port));
  const starting = agent.start(120_000);
  writeFileSync(pidFile, String(agent.child!.pid));
  await starting;
  await new Promise(() => undefined);
});
