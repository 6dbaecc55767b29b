// The dashboard in a real browser (Debian's headless chromium through playwright-core) against a real controller
// and real agents: the login form without a token, every agent listed, a hold shown live, chart points drawn, a
// killed agent shown disconnected, and no console errors on the way.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chromiumMissing, launchChromium } from '../../scripts/chromium.js';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { grpcTransport } from '../helpers/transport.js';

const VIEWER_TOKEN = 'viewer-token-0123456789';

test('the dashboard: login form, every agent, a hold live within 2 s, chart points, a killed agent disconnected, no console errors', { skip: chromiumMissing() }, async (t) => {
  const { ctl, api, agents, defer } = await fleet(t, grpcTransport, {
    agents: ['web-1', 'web-2', 'web-3'],
    sinks: 1,
    routes: ([sink]) => ({ 'example.com': `smtp:[127.0.0.1]:${sink!.port}` }),
    controller: { http: { listen: '127.0.0.1:0' }, tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN, viewer: VIEWER_TOKEN } },
  });
  const browser = await launchChromium();
  defer(() => browser.close());
  const page = await browser.context.newPage();
  const errors: string[] = [];
  let loggedIn = false;
  // The login page itself is a 401 (which Chromium may log); from the dashboard on, nothing may be an error.
  page.on('console', (m) => loggedIn && m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(e.message));

  const url = `http://127.0.0.1:${ctl.controller.httpPort}/`;
  const first = await page.goto(url);
  assert.equal(first?.status(), 401);
  assert.equal(await page.locator('form[action="/login"] input[name="token"]').count(), 1, 'the login form');
  assert.equal(await page.locator('#fleet').count(), 0, 'no dashboard without a token');

  await page.fill('input[name="token"]', VIEWER_TOKEN);
  loggedIn = true;
  await Promise.all([page.waitForURL(url), page.click('button[type="submit"]')]);
  for (const id of ['web-1', 'web-2', 'web-3']) await page.locator(`#fleet tr[data-agent="${id}"][data-state="connected"]`).waitFor({ timeout: 10_000 });
  await page.locator('#phase li[data-match="example.com"][data-phase="forwarding"]').waitFor();
  assert.equal(await page.locator('#routes tr[data-match="example.com"][data-hold="false"]').count(), 1);

  // Mail through web-1, so the charts have queue and delivery points (one per agent every 5 s).
  const client = smtpClient(agents[0]!.port);
  for (let i = 0; i < 5; i++) await client.sendMail({ envelope: { from: 'sender@sender.test', to: ['user@example.com'] }, raw: testMessage(i) });
  await page.waitForFunction(() => Number(document.querySelector('#chart-queue')!.getAttribute('data-points')) >= 6, undefined, { timeout: 20_000 });
  // Drawn, not only counted: the plot's canvas has coloured pixels.
  const inked = await page.evaluate(() => {
    const canvas = document.querySelector('#chart-rate canvas') as HTMLCanvasElement;
    const px = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i]! > 0) n++;
    return n;
  });
  assert.ok(inked > 50, `the delivery-rate chart drew lines (${inked} pixels)`);
  // The controller keeps the history: a reload draws the same points again.
  const points = Number(await page.locator('#chart-queue').getAttribute('data-points'));
  await page.reload();
  await page.waitForFunction((n) => Number(document.querySelector('#chart-queue')!.getAttribute('data-points')) >= n, points, { timeout: 5_000 });

  // A hold from the CLI's API: the banner and the route row change without a reload, within 2 s.
  await page.evaluate(() => ((window as unknown as { notReloaded: boolean }).notReloaded = true));
  const started = Date.now();
  const hold = api.hold('example.com');
  await Promise.all([
    page.locator('#phase li[data-match="example.com"][data-phase="hold"]').waitFor({ timeout: 2_000 }),
    page.locator('#routes tr[data-match="example.com"][data-hold="true"]').waitFor({ timeout: 2_000 }),
  ]);
  const shownMs = Date.now() - started;
  await hold;
  assert.ok(shownMs < 2_000, `shown after ${shownMs} ms`);
  assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true, 'no reload');
  assert.match(await page.locator('#routes tr[data-match="example.com"]').innerText(), /mxswitch release example\.com/);
  await page.locator('.op[data-state="done"]').first().waitFor();

  // An agent stops: its row turns disconnected.
  await agents[2]!.cleanup();
  await page.locator('#fleet tr[data-agent="web-3"][data-state="disconnected"]').waitFor({ timeout: 15_000 });
  await waitFor('the other agents still connected', async () => (await page.locator('#fleet tr[data-state="connected"]').count()) === 2);
  assert.deepEqual(errors, [], 'no console errors');
});
