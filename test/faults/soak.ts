/**
 * `npm run soak [-- --minutes N] [-- --sessions N]`: the crash cycles of test/faults/crash.test.ts for N minutes
 * (default 30), then one clean run that drains the queue, then a final report. Exit status: 0 = nothing
 * acknowledged was lost and the queue is clean; 1 = a loss, a queue left non-empty or corrupt, or the run
 * overran its time bound (N minutes + 5 minutes for start-up and the drain).
 */
import { parseArgs } from 'node:util';
import { formatReport, runCrashCycles } from './crash-harness.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    sessions: { type: 'string', default: '12' },
    quiet: { type: 'boolean', default: false },
  },
});
const minutes = Number(values.minutes);
const sessions = Number(values.sessions);
if (!(minutes > 0) || !(sessions >= 1)) {
  console.error('soak: --minutes must be > 0 and --sessions >= 1');
  process.exit(2);
}

const durationMs = minutes * 60_000;
const drainTimeoutMs = 180_000;
// The hard bound: cycles stop at `durationMs`; start-up, the last cycle and the drain get 5 minutes more.
const boundMs = durationMs + 300_000;
const started = Date.now();
const stopCycles = new AbortController();
let overran = false;
let interrupted = false;
const hardStop = setTimeout(() => {
  overran = true;
  console.error(`soak: FAILED - still running after ${Math.round(boundMs / 60_000)} minutes (the time bound); giving up`);
  // The harness's finally-blocks SIGKILL the agent on the way out; exit shortly after in any case.
  stopCycles.abort();
  setTimeout(() => process.exit(1), 10_000).unref();
}, boundMs);
hardStop.unref();
process.on('SIGINT', () => {
  if (interrupted) process.exit(1);
  interrupted = true;
  console.error('soak: interrupted; stopping the cycles, then draining and reporting (Ctrl-C again to quit at once)');
  stopCycles.abort();
});

console.log(`soak: ${minutes} min of SIGKILL cycles against a real agent process, ${sessions} SMTP sessions`);
let lastLine = 0;
const report = await runCrashCycles({
  durationMs,
  sessions,
  drainTimeoutMs,
  signal: stopCycles.signal,
  log: (line) => {
    // One progress line per cycle with --quiet off, at most one a minute with --quiet.
    if (!values.quiet || Date.now() - lastLine > 60_000) {
      lastLine = Date.now();
      console.log(`[${((Date.now() - started) / 60_000).toFixed(1)} min] ${line}`);
    }
  },
});
clearTimeout(hardStop);

console.log('');
console.log('soak report');
console.log(`  duration          ${((Date.now() - started) / 60_000).toFixed(1)} min (drain ${(report.drainMs / 1000).toFixed(1)} s)`);
console.log(`  kill cycles       ${report.cycles} (${report.earlyKills} during start-up)`);
console.log(`  acknowledged      ${report.acknowledged}  (message x recipient pairs a client got 250 for)`);
console.log(`  delivered         ${report.delivered}`);
console.log(`  lost              ${report.lost}`);
console.log(`  duplicated        ${report.duplicated}  (at-least-once: a kill between the next hop's 250 and our commit)`);
console.log(`  sink 451s retried ${report.sinkDeferrals}`);
console.log(`  left in queue     ${report.leftInQueue}`);
console.log(`  integrity_check   ${report.integrity}`);
console.log(`  ${formatReport(report)}`);
const ok = report.lost === 0 && report.leftInQueue === 0 && report.integrity === 'ok' && !overran;
if (interrupted) console.log('  (interrupted before the planned duration)');
if (report.lost) console.log(`  lost samples: ${report.lostSamples.join(', ')}`);
console.log(ok ? 'soak: OK' : 'soak: FAILED');
process.exit(ok ? 0 : 1);
