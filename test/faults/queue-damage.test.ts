import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, openSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI_ENTRY } from '../../control/demo/processes.js';
import { tempDir } from '../helpers/agent.js';
import { send } from './send-one.js';
import { CliProcess, collect, freePort, REPO, spawnCli, writeYaml, type CliResult, type SpawnCliOptions } from '../helpers/process.js';

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** `mxswitch agent --config FILE` to its exit (as `as` says: another user, fewer capabilities). */
function runAgent(config: string, as: SpawnCliOptions = {}): Promise<CliResult> {
  return collect(spawnCli(['agent', '--config', config], { HOME: '/tmp' }, as), 30_000);
}

/** Root without the capabilities that let it read and write any file: its own mode-000 file is EACCES to it. */
const WITHOUT_DAC_CAPS = ['setpriv', '--inh-caps=-dac_override,-dac_read_search', '--bounding-set=-dac_override,-dac_read_search', '--'];

/**
 * Whether a process started `as` can read everything the agent needs (`readable`) but not `locked` (mode 000):
 * undefined when it can, else why not.
 */
function probe(as: SpawnCliOptions, readable: readonly string[], locked: string): string | undefined {
  const script = `
    const fs = require('node:fs');
    for (const f of ${JSON.stringify(readable)}) {
      try { fs.accessSync(f, fs.constants.R_OK); } catch (e) { console.log('cannot read ' + f + ' (' + e.code + ')'); process.exit(1); }
    }
    try { fs.accessSync(${JSON.stringify(locked)}, fs.constants.R_OK); console.log('reads a mode-000 file anyway'); process.exit(1); }
    catch (e) { if (e.code !== 'EACCES') { console.log('mode-000 file: ' + e.code); process.exit(1); } }`;
  const [command, ...args] = [...(as.via ?? []), process.execPath, '-e', script];
  const r = spawnSync(command!, args, { cwd: '/', encoding: 'utf8', timeout: 15_000, ...(as.uid !== undefined ? { uid: as.uid, gid: as.gid } : {}) });
  if (r.error) return r.error.message;
  if (r.status !== 0) return `${r.stdout}${r.stderr}`.trim().split('\n')[0] || `exit ${r.status}`;
  return undefined;
}

describe('a damaged or unreadable queue database at start', () => {
  let dir = '';
  let dataDir = '';
  let dbFile = '';
  let config = '';

  // A real queue with mail in it, made by a real agent; each test damages a copy of it.
  before(async () => {
    dir = tempDir('mxs-bad-db-');
    dataDir = join(dir, 'data');
    dbFile = join(dataDir, 'queue.db');
    const port = await freePort();
    config = writeYaml(dir, 'agent.yaml', {
      id: 'bad-db-agent',
      dataDir,
      smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.test' },
      routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }],
      log: { level: 'error' },
    });
    const agent = await new CliProcess(['agent', '--config', config], port).start();
    try {
      for (let i = 0; i < 20; i++) assert.match((await send(port, `kept-${i}`, 6000)).reply, /^250 /);
    } finally {
      // Stopped right here, also when a send failed: no agent outlives the hook.
      await agent.kill('SIGTERM');
    }
    copyFileSync(dbFile, join(dir, 'good.db'));
  });

  const damage: [string, () => void, RegExp][] = [
    ['a garbage header', () => writeAt(0, Buffer.from('this is not an SQLite file at all!')), /: file is not a database; the file was left as it is/],
    ['a garbage b-tree page', () => writeAt(4096 * 2, Buffer.alloc(4096, 0xa5)), /: integrity check failed: .*page.*; the file was left as it is/],
    ['zeroed pages', () => writeAt(4096 * 5, Buffer.alloc(4096 * 3)), /: integrity check failed: .*; the file was left as it is/],
    ['a truncated file', () => truncateSync(dbFile, Math.floor(statSync(dbFile).size / 2) + 100), /: (database disk image is malformed|integrity check failed: .*); the file was left as it is/],
  ];
  function writeAt(offset: number, bytes: Buffer): void {
    const fd = openSync(dbFile, 'r+');
    writeSync(fd, bytes, 0, bytes.length, offset);
    closeSync(fd);
  }

  async function expectRefusal(what: string, reason: RegExp, as: SpawnCliOptions = {}): Promise<void> {
    const hash = sha256(dbFile);
    const files = readdirSync(dataDir).sort();
    const r = await runAgent(config, as);
    const stderr = r.stderr.trimEnd();
    console.log(`queue database with ${what}: exit ${r.code}: ${stderr}`);
    assert.equal(r.code, 1, `exit status (stderr: ${r.stderr})`);
    assert.ok(!stderr.includes('\n'), `one line: ${JSON.stringify(r.stderr)}`);
    assert.match(stderr, new RegExp(`^mxswitch: cannot open queue database ${dbFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    assert.match(stderr, reason);
    assert.equal(sha256(dbFile), hash, 'queue.db left byte for byte as it was');
    assert.deepEqual(readdirSync(dataDir).sort(), files, 'no file added or removed next to it');
  }

  for (const [what, corrupt, reason] of damage) {
    test(`${what}: exit 1, one line naming the file, the file untouched`, async () => {
      copyFileSync(join(dir, 'good.db'), dbFile);
      corrupt();
      await expectRefusal(what, reason);
    });
  }

  test('an unreadable file: exit 1, one line naming the file, the file untouched', async (t) => {
    copyFileSync(join(dir, 'good.db'), dbFile);
    chmodSync(dbFile, 0o000);
    t.after(() => chmodSync(dbFile, 0o644));
    // Root reads any file. Candidates for an agent that mode 000 stops, from wherever this checkout is: root
    // without its DAC capabilities (reads the checkout as its owner, e.g. a clone in a 0700 mktemp -d
    // directory), or nobody (needs a world-readable checkout). Each is probed first; none: skipped, saying why.
    const needs = [CLI_ENTRY, join(REPO, 'node_modules', 'tsx', 'package.json'), join(REPO, 'node_modules', 'better-sqlite3', 'package.json'), config];
    const candidates: { how: string; as: SpawnCliOptions; prepare?: () => void }[] =
      process.getuid?.() === 0
        ? [
            { how: 'root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv)', as: { via: WITHOUT_DAC_CAPS } },
            {
              how: 'nobody (uid 65534)',
              as: { uid: 65534, gid: 65534 },
              prepare: () => {
                chmodSync(dir, 0o755);
                chmodSync(dataDir, 0o755);
                chmodSync(config, 0o644);
              },
            },
          ]
        : [{ how: `this user (uid ${process.getuid?.()})`, as: {} }];
    const refused: string[] = [];
    for (const c of candidates) {
      c.prepare?.();
      const why = probe(c.as, needs, dbFile);
      if (why !== undefined) {
        refused.push(`${c.how}: ${why}`);
        continue;
      }
      console.log(`unreadable queue database: the agent runs as ${c.how}`);
      await expectRefusal('mode 000', /: not readable and writable by this user \(EACCES\)$/, c.as);
      return;
    }
    const reason = `no way to run the agent so that a mode-000 file is unreadable to it from ${REPO}: ${refused.join('; ')}`;
    console.log(`skipped: ${reason}`);
    t.skip(reason);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));
});
