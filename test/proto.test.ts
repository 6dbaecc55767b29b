// Guards the protobuf API: `buf lint` must be clean, and the committed
// generated code in proto/gen/ must be exactly what `buf generate` produces
// from the current .proto files (run `npm run proto` to refresh it).
//
// Needs no network: buf's npm package ships the binary, the module has no
// BSR dependencies, and ts-proto runs as a local plugin.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const protoDir = join(repoRoot, "proto");
const committedGen = join(protoDir, "gen");
const buf = join(repoRoot, "node_modules", ".bin", process.platform === "win32" ? "buf.cmd" : "buf");

function runBuf(args: string[]) {
  // cwd must be proto/: buf.gen.yaml's local plugin path is relative to it.
  const r = spawnSync(buf, args, { cwd: protoDir, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw r.error;
  return r;
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else out.push(relative(root, p));
    }
  };
  walk(root);
  return out.sort();
}

test("buf lint is clean", () => {
  const r = runBuf(["lint"]);
  assert.equal(r.status, 0, `buf lint failed:\n${r.stdout}${r.stderr}`);
});

test("committed proto/gen matches buf generate output", (t) => {
  const tmp = mkdtempSync(join(tmpdir(), "mxswitch-proto-"));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));

  const r = runBuf(["generate", "--output", tmp]);
  assert.equal(r.status, 0, `buf generate failed:\n${r.stdout}${r.stderr}`);

  const freshGen = join(tmp, "gen");
  const fresh = listFiles(freshGen);
  const committed = listFiles(committedGen);
  assert.ok(fresh.length > 0, "buf generate produced no files");
  assert.deepEqual(committed, fresh, "proto/gen file list is stale; run `npm run proto`");

  for (const f of fresh) {
    const want = readFileSync(join(freshGen, f));
    const have = readFileSync(join(committedGen, f));
    assert.ok(have.equals(want), `proto/gen/${f} is stale; run \`npm run proto\``);
  }
});
