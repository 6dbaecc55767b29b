// `npm run screenshot`: runs `mxswitch demo`, logs in to the dashboard it prints with headless chromium and takes
// docs/dashboard.png during the hold phase (queues building up, the hold on the banner), for the README.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { CLI_NODE_ARGS, reapOnExit, REPO_ROOT } from '../control/demo/processes.js';
import { chromiumMissing, launchChromium } from './chromium.js';

const DURATION_S = 40;
const OUT = join(REPO_ROOT, 'docs', 'dashboard.png');

const missing = chromiumMissing();
if (missing) {
  console.error(`screenshot: ${missing}`);
  process.exit(1);
}

const demo = reapOnExit(spawn(process.execPath, [...CLI_NODE_ARGS, 'demo', '--duration', `${DURATION_S}s`], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] }));
const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
const browser = await launchChromium();
try {
  const page = await browser.context.newPage();
  let shot: Promise<void> | undefined;
  for await (const line of createInterface({ input: demo.stdout! })) {
    console.log(line);
    const dashboard = /dashboard: (http:\/\/\S+) \(log in with the viewer token (\S+)\)/.exec(line);
    if (dashboard) {
      await page.goto(dashboard[1]!);
      await page.fill('input[name="token"]', dashboard[2]!);
      await Promise.all([page.waitForURL(dashboard[1]!), page.click('button[type="submit"]')]);
    }
    // Halfway through the hold: the phase banner says so and the queue chart climbs.
    if (line.startsWith('== Phase 2') && !shot) {
      shot = new Promise((r) => setTimeout(r, (DURATION_S * 1000) / 8)).then(async () => {
        mkdirSync(join(REPO_ROOT, 'docs'), { recursive: true });
        await page.screenshot({ path: OUT, fullPage: true });
        console.log(`screenshot: ${OUT}`);
      });
    }
  }
  if (!shot) throw new Error('the demo ended before its hold phase');
  await shot;
  const code = await exited;
  if (code !== 0) throw new Error(`the demo exited with ${code}`);
} finally {
  await browser.close();
}
