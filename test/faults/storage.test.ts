import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { CLI_ENTRY } from '../../control/demo/processes.js';
import { startAgent, tempDir, waitFor } from '../helpers/agent.js';
import { CliProcess, freePort, REPO, writeYaml } from '../helpers/process.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

const MiB = 1024 * 1024;

/** One message through a raw session; returns the reply that decided it (MAIL's when MAIL is refused). */
async function send(port: number, id: string, size: number): Promise<string> {
  const c = await RawSmtp.open(port);
  try {
    await c.command('EHLO sender.test');
    const mail = await c.command('MAIL FROM:<s@sender.test>');
    if (!mail.startsWith('250')) return mail;
    const rcpt = await c.command('RCPT TO:<u@example.com>');
    if (!rcpt.startsWith('250')) return rcpt;
    const data = await c.command('DATA');
    if (!data.startsWith('354')) return data;
    const line = `${'z'.repeat(998)}\r\n`;
    c.write(`Message-ID: <${id}@sender.test>\r\nSubject: ${id}\r\n\r\n${line.repeat(Math.ceil(size / line.length))}.\r\n`);
    return await c.reply(20_000);
  } finally {
    c.close();
  }
}

function integrity(dbFile: string): string {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    return String(db.pragma('integrity_check', { simple: true }));
  } finally {
    db.close();
  }
}

function queued(dbFile: string): number {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT COUNT(*) FROM recipients').pluck().get() as number;
  } finally {
    db.close();
  }
}

/** The storage under test: a real size-limited filesystem when we may mount one, else SQLite's max_page_count. */
interface Storage {
  kind: string;
  port: number;
  dbFile: string;
  /** Limit so the queue can fill it with mail. */
  limit(): void;
  /** Take all that is left (another process filling the disk, or the database pinned at its size). */
  fillRest(): void;
  /** Space returns. */
  free(): void;
  stillFull(): boolean;
  /** Stops the agent; returns integrity_check of the queue after it stopped. */
  cleanup(): Promise<string>;
}

async function tmpfsStorage(dir: string, sinkPort: number, sizeMiB: number): Promise<Storage | undefined> {
  const mnt = join(dir, 'data');
  mkdirSync(mnt);
  // MXSWITCH_TEST_NO_MOUNT=1 runs the max_page_count variant (what runs where mount is not permitted).
  if (process.env.MXSWITCH_TEST_NO_MOUNT) return undefined;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch {
    return undefined;
  }
  const port = await freePort();
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'full-agent',
    dataDir: mnt,
    smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.test', maxMessageSize: '1MB' },
    routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${sinkPort}` }],
    retry: { intervals: ['300ms'], jitter: 0, maxAge: '1d' },
    delivery: { pollInterval: '50ms', connectTimeout: '1s' },
    log: { level: 'error' },
  });
  let agent: CliProcess | undefined;
  try {
    agent = await new CliProcess(['agent', '--config', config], port).start();
  } catch (err) {
    execFileSync('umount', [mnt]);
    throw err;
  }
  const filler = join(mnt, 'filler');
  return {
    kind: `tmpfs of ${sizeMiB} MiB (mount -t tmpfs)`,
    port,
    dbFile: join(mnt, 'queue.db'),
    limit: () => undefined,
    fillRest() {
      const fd = openSync(filler, 'w');
      for (const chunk of [65536, 4096, 512]) {
        try {
          for (;;) writeSync(fd, Buffer.alloc(chunk));
        } catch {
          // ENOSPC: try smaller writes, then stop
        }
      }
      closeSync(fd);
    },
    free: () => rmSync(filler, { force: true }),
    stillFull: () => {
      const s = statfsSync(mnt);
      return s.bavail * s.bsize < 64 * 1024;
    },
    async cleanup() {
      await agent?.kill('SIGTERM');
      try {
        return integrity(join(mnt, 'queue.db'));
      } finally {
        execFileSync('umount', [mnt]);
      }
    },
  };
}

async function pageLimitStorage(sinkPort: number): Promise<Storage> {
  const a = await startAgent({
    smtp: { maxMessageSize: '1MB' },
    routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${sinkPort}` }],
    retry: { intervals: ['300ms'], jitter: 0, maxAge: '1d' },
    delivery: { pollInterval: '50ms', connectTimeout: '1s', resolvers: ['127.0.0.1:9'] },
  });
  const db = a.agent.queue.db;
  const pages = () => db.pragma('page_count', { simple: true }) as number;
  return {
    kind: 'SQLite max_page_count (in-process agent: mount was not permitted)',
    port: a.port,
    dbFile: join(a.config.dataDir, 'queue.db'),
    limit: () => db.pragma(`max_page_count = ${pages() + 4000}`),
    fillRest: () => db.pragma(`max_page_count = ${pages()}`),
    free: () => db.pragma('max_page_count = 1073741823'),
    stillFull: () => (db.pragma('max_page_count', { simple: true }) as number) <= pages(),
    async cleanup() {
      await a.cleanup(true);
      try {
        return integrity(join(a.config.dataDir, 'queue.db'));
      } finally {
        rmSync(a.config.dataDir, { recursive: true, force: true });
      }
    },
  };
}

describe('storage faults', () => {
  test('storage full: 452 4.3.1 for new mail (never a false 250), queued mail still delivered, no corruption, acceptance resumes', { timeout: 120_000 }, async () => {
    const dir = tempDir('mxs-full-');
    const sinkPort = await freePort();
    const storage = (await tmpfsStorage(dir, sinkPort, 24)) ?? (await pageLimitStorage(sinkPort));
    const sink = new Sink();
    const acked: string[] = [];
    let finalCheck = 'not run';
    try {
      // 1. The next hop is down and mail piles up until the queue refuses more.
      storage.limit();
      let refusal = '';
      for (let i = 0; i < 400 && !refusal; i++) {
        const reply = await send(storage.port, `pile-${i}`, 256 * 1024);
        if (reply.startsWith('250 ')) acked.push(`pile-${i}`);
        else refusal = reply;
      }
      assert.match(refusal, /^452 4\.3\.1 /, `the first refusal when storage runs out (after ${acked.length} messages)`);
      const piled = acked.length;
      assert.ok(piled >= 10, `some mail piled up first (${piled})`);

      // 2. The rest of the space goes too. Every answer is 452 4.3.1 or a 250 that will be honoured.
      storage.fillRest();
      const replies: string[] = [];
      for (let i = 0; i < 6; i++) {
        const reply = await send(storage.port, `full-${i}`, i % 2 ? 64 * 1024 : 2000);
        replies.push(reply.split(' ').slice(0, 2).join(' '));
        assert.match(reply, /^(452 4\.3\.1 |250 2\.0\.0 Ok: queued as )/, 'nothing but 452 4.3.1 or a real 250');
        if (reply.startsWith('250')) acked.push(`full-${i}`);
      }
      assert.ok(replies.filter((r) => r === '452 4.3.1').length >= 4, `new mail refused while full: ${replies.join(', ')}`);
      assert.ok(storage.stillFull(), 'storage still full');

      // 3. The next hop comes back: queued mail goes out while storage is still full.
      const t0 = Date.now();
      await sink.start(sinkPort);
      const arrived = () => new Set(sink.messages.map((m) => /^Message-ID: <([^@]+)@/m.exec(m.data.toString('latin1'))?.[1]));
      await waitFor('every acknowledged message delivered while storage is full', () => acked.every((id) => arrived().has(id)), 30_000);
      const drainMs = Date.now() - t0;
      await waitFor('queue empty', () => queued(storage.dbFile) === 0, 10_000);
      assert.ok(storage.stillFull(), 'delivered without any space returning');
      assert.equal(integrity(storage.dbFile), 'ok');

      // 4. Space returns: mail is accepted again.
      storage.free();
      await new Promise((r) => setTimeout(r, 300)); // the free-space reading is at most 250 ms old
      for (let i = 0; i < 3; i++) {
        assert.match(await send(storage.port, `after-${i}`, 2000), /^250 2\.0\.0 Ok: queued as /);
        acked.push(`after-${i}`);
      }
      await waitFor('mail accepted after space returned is delivered', () => acked.every((id) => arrived().has(id)), 15_000);
      const lost = acked.filter((id) => !arrived().has(id));
      assert.equal(lost.length, 0);
      console.log(
        `storage full [${storage.kind}]: ${piled} x 256 KiB queued, then 452 4.3.1; with the rest taken: ${replies.join(', ')}; ` +
          `${acked.length - 3} acknowledged delivered while full in ${(drainMs / 1000).toFixed(1)} s; integrity_check ok; after space returned 3/3 accepted; lost ${lost.length}`,
      );
    } finally {
      finalCheck = await storage.cleanup();
      await sink.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(finalCheck, 'ok', 'integrity_check after the agent stopped');
  });
});

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** `mxswitch agent --config FILE` to its exit (as another user when `uid` is given). */
function runAgent(config: string, uid?: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI_ENTRY, 'agent', '--config', config], {
      cwd: REPO,
      env: { ...process.env, HOME: '/tmp' },
      ...(uid !== undefined ? { uid, gid: uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
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
    for (let i = 0; i < 20; i++) assert.match(await send(port, `kept-${i}`, 6000), /^250 /);
    await agent.kill('SIGTERM');
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

  async function expectRefusal(what: string, reason: RegExp, uid?: number): Promise<void> {
    const hash = sha256(dbFile);
    const files = readdirSync(dataDir).sort();
    const r = await runAgent(config, uid);
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

  test('an unreadable file: exit 1, one line naming the file, the file untouched', async () => {
    copyFileSync(join(dir, 'good.db'), dbFile);
    // root reads any file: run the agent as nobody, with the config readable and queue.db not.
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      chmodSync(dir, 0o755);
      chmodSync(dataDir, 0o755);
      chmodSync(config, 0o644);
    }
    chmodSync(dbFile, 0o000);
    try {
      await expectRefusal('mode 000', /: not readable and writable by this user \(EACCES\)$/, asRoot ? 65534 : undefined);
    } finally {
      chmodSync(dbFile, 0o644);
    }
  });

  after(() => rmSync(dir, { recursive: true, force: true }));
});
