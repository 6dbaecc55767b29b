/**
 * `tsx test/bench/profile-top.ts FILE.cpuprofile [N]`: the N (20) functions with the most self time in a
 * V8 CPU profile (what `node --cpu-prof` writes; MXSWITCH_BENCH_PROFILE=DIR makes the bench's agents write one),
 * with their share of all samples, and the share of the idle, GC and program pseudo-nodes.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { REPO } from '../helpers/process.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const [file, nArg] = process.argv.slice(2);
if (!file) throw new Error('usage: profile-top.ts FILE.cpuprofile [N]');
const top = Number(nArg ?? 20);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
// Self time per node: each sample's delta goes to the node it hit (deltas are the time before each sample).
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0)));
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
const where = (n: ProfileNode) => {
  const url = n.callFrame.url.replace(/^file:\/\//, '');
  const path = url.startsWith(REPO) ? relative(REPO, url) : url.replace(/.*\/node_modules\//, '');
  return path ? `${path}:${n.callFrame.lineNumber + 1}` : '(native)';
};
const byFunction = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  const key = `${n.callFrame.functionName || '(anonymous)'}  ${where(n)}`;
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
}
const rows = [...byFunction.entries()].sort((a, b) => b[1] - a[1]);
const busy = rows.filter(([k]) => !k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s not idle`);
console.log('  self ms  % all  % busy  function  where');
for (const [k, us] of rows.slice(0, top)) {
  const pctBusy = k.startsWith('(idle)') ? '      ' : ((100 * us) / busy).toFixed(1).padStart(6);
  console.log(`${(us / 1000).toFixed(0).padStart(9)} ${((100 * us) / total).toFixed(1).padStart(6)} ${pctBusy}  ${k}`);
}
