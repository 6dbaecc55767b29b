// The dashboard: plain DOM over the controller's read-only API. It loads the state once (/api/v1/status, routes,
// operations, history), then follows /api/v1/events (Server-Sent Events) and redraws what an event touches.
// Every value from the API goes into the page as text (textContent), never as markup.
'use strict';

const state = { version: 0, agents: new Map(), routes: [], operations: [], history: new Map() };
const charts = { queue: undefined, rate: undefined, agents: '' };

/** An element with text and attributes; children appended in order. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path) {
  const res = await fetch(`/api/v1/${path}`, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  // The session ended (controller restarted, cookie expired): the page shows the login form again.
  if (res.status === 401) {
    location.reload();
    throw new Error('logged out');
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)}h`;
  return `${(seconds / 86400).toFixed(1)}d`;
}

const rate = (n) => (n === undefined ? '-' : n.toFixed(1));

/** Recipients queued for `match` on every agent (last health reports). */
function queuedFor(match) {
  let n = 0;
  for (const a of state.agents.values()) for (const q of a.health?.queues ?? []) if (q.match === match) n += q.queued + q.deferred + q.held + q.inFlight;
  return n;
}

/**
 * Where a route stands in a migration: an operation running on it (switching), held, switched and still draining
 * or drained (its last operation was a completed switchover), else forwarding to its target.
 */
function phaseOf(route) {
  const ops = state.operations.filter((o) => o.match === route.match);
  const running = ops.find((o) => o.state === 'running');
  const queued = queuedFor(route.match);
  if (running) return { phase: 'switching', text: `${running.kind} running: step ${running.step}` };
  if (route.hold) return { phase: 'hold', text: `on hold, ${queued} kept` };
  const last = ops.find((o) => o.kind !== 'flush');
  if (last && last.kind === 'switchover' && last.state === 'done') {
    return queued > 0 ? { phase: 'draining', text: `switched to ${route.target}, draining ${queued}` } : { phase: 'drained', text: `switched to ${route.target}, drained` };
  }
  return { phase: 'forwarding', text: `forwarding to ${route.target}${queued ? `, ${queued} queued` : ''}` };
}

function renderPhase() {
  const items = state.routes.map((r) => {
    const p = phaseOf(r);
    return el('li', { 'data-match': r.match, 'data-phase': p.phase }, el('strong', {}, r.match), ' ', p.text);
  });
  document.getElementById('phase').replaceChildren(...(items.length ? items : [el('li', {}, 'no routes')]));
}

function renderFleet() {
  const rows = [...state.agents.values()]
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((a) => {
      const h = a.health;
      const last = state.history.get(a.id)?.at(-1);
      const queues = (h?.queues ?? []).filter((q) => q.queued + q.deferred + q.held + q.inFlight > 0).map((q) => `${q.match}: ${q.queued + q.deferred + q.held + q.inFlight}${q.held ? ` (held ${q.held})` : ''}${q.deferred ? ` (deferred ${q.deferred})` : ''}`);
      const waiting = h?.delivery && !h.delivery.open ? `not delivering: ${h.delivery.reason}` : '';
      return el(
        'tr',
        { 'data-agent': a.id, 'data-state': a.state },
        el('td', {}, a.id, a.expected ? '' : ' (not expected)'),
        el('td', {}, a.region || '-'),
        el('td', { class: 'state' }, a.state),
        el('td', {}, `v${a.appliedVersion}${a.appliedVersion < state.version ? ' (behind)' : ''}`),
        el('td', {}, h ? `${h.totalQueued}${queues.length ? `: ${queues.join(', ')}` : ''}` : '-'),
        el('td', {}, h && h.totalQueued > 0 ? duration(h.oldestAgeSeconds) : '-'),
        el('td', {}, rate(last?.accepted)),
        el('td', {}, rate(last?.delivered)),
        el('td', {}, rate(last?.deferred)),
        el('td', {}, a.lastError || waiting || h?.lastDeliveryError || ''),
      );
    });
  document.querySelector('#fleet tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 10 }, 'no agents registered'))]));
}

function renderRoutes() {
  document.getElementById('version').textContent = `(table version ${state.version})`;
  const rows = state.routes.map((r) => {
    // No buttons: the command for the next step, to copy into a terminal.
    const command = r.hold ? `mxswitch release ${r.match}` : `mxswitch hold ${r.match}`;
    return el(
      'tr',
      { 'data-match': r.match, 'data-hold': String(r.hold) },
      el('td', {}, r.match),
      el('td', {}, r.target),
      el('td', { class: 'hold' }, r.hold ? 'held' : ''),
      el('td', {}, queuedFor(r.match)),
      el('td', {}, el('code', {}, command), r.hold ? '' : ' or ', r.hold ? '' : el('code', {}, `mxswitch switchover ${r.match} --to TARGET`)),
    );
  });
  document.querySelector('#routes tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 5 }, 'no routes'))]));
}

function renderOperations() {
  const ops = [...state.operations].sort((a, b) => Number(b.state === 'running') - Number(a.state === 'running'));
  const items = ops.slice(0, 10).map((o) => {
    const p = o.progress;
    const steps = el('ol', {}, ...o.steps.map((s, i) => el('li', { 'data-current': String(o.state === 'running' && i === o.stepIndex) }, s, o.state !== 'running' || i < o.stepIndex ? ' ✓' : '')));
    const acks = p && (p.acked.length || p.pending.length || p.failed.length) ? el('div', { class: 'muted' }, `acked: ${p.acked.join(', ') || '-'}; waiting for: ${p.pending.join(', ') || '-'}${p.failed.length ? `; failed: ${p.failed.join(', ')}` : ''}`) : '';
    return el(
      'div',
      { class: 'op', 'data-op': o.id, 'data-state': o.state },
      el('strong', {}, `${o.kind} ${o.match || '(every route)'}${o.target ? ` → ${o.target}` : ''}`),
      ` ${o.state}${o.error ? `: ${o.error}` : ''} `,
      el('span', { class: 'muted' }, `${o.id}, started ${new Date(o.startedAtMs).toLocaleTimeString()}`),
      steps,
      acks,
      o.state === 'running' ? el('div', {}, el('code', {}, `mxswitch follow ${o.id}`)) : '',
    );
  });
  document.getElementById('operations').replaceChildren(...(items.length ? items : [el('p', { class: 'muted' }, 'no operations yet')]));
}

/** One chart: a line per agent of `field` over time (uPlot, times in seconds). */
function chartData(field) {
  const ids = [...state.history.keys()].sort();
  const tables = ids.map((id) => {
    const pts = state.history.get(id);
    return [pts.map((p) => p.t / 1000), pts.map((p) => p[field])];
  });
  return { ids, data: tables.length ? uPlot.join(tables) : [[]] };
}

const COLORS = ['#2f6fde', '#d4562c', '#1a7f37', '#8e44ad', '#b38600', '#2b9a8f', '#c2185b', '#546e7a'];

function drawChart(key, field, container) {
  const { ids, data } = chartData(field);
  const points = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null && y !== undefined).length, 0);
  container.setAttribute('data-points', String(points));
  const agents = ids.join(',');
  if (charts[key] && charts.agents === agents) return charts[key].setData(data);
  charts[key]?.destroy();
  charts[key] = new uPlot(
    {
      width: Math.max(300, container.clientWidth - 10),
      height: 220,
      series: [{}, ...ids.map((id, i) => ({ label: id, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 5 }, spanGaps: true }))],
      axes: [{}, { size: 60 }],
    },
    data,
    container,
  );
}

function renderCharts() {
  drawChart('queue', 'queued', document.getElementById('chart-queue'));
  drawChart('rate', 'delivered', document.getElementById('chart-rate'));
  charts.agents = [...state.history.keys()].sort().join(',');
}

function renderAll() {
  renderPhase();
  renderFleet();
  renderRoutes();
  renderOperations();
  renderCharts();
  document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

/** Coalesces bursts of events into one redraw per animation frame. */
let pending;
function schedule(fn) {
  pending = pending ?? new Set();
  pending.add(fn);
  if (pending.size === 1) {
    requestAnimationFrame(() => {
      const fns = pending;
      pending = undefined;
      for (const f of fns) f();
      document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    });
  }
}

async function loadRoutes() {
  const r = await api('routes');
  state.version = r.version;
  state.routes = r.routes;
  schedule(renderRoutes);
  schedule(renderPhase);
  schedule(renderFleet);
}

async function loadOperations() {
  state.operations = (await api('operations')).operations;
  schedule(renderOperations);
  schedule(renderPhase);
}

async function load() {
  const [status, routes, ops, history] = await Promise.all([api('status'), api('routes'), api('operations'), api('history')]);
  state.agents = new Map(status.agents.map((a) => [a.id, a]));
  state.version = routes.version;
  state.routes = routes.routes;
  state.operations = ops.operations;
  state.history = new Map(Object.entries(history.agents));
  renderAll();
}

/** A refresh of one part at most every 250 ms however many events ask for it. */
function throttled(fn) {
  let timer;
  return () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      fn().catch(showError);
    }, 250);
  };
}
const refreshOperations = throttled(loadOperations);

function showError(err) {
  const live = document.getElementById('live');
  live.dataset.live = 'reconnecting';
  live.textContent = `error: ${err.message}`;
}

function follow() {
  const live = document.getElementById('live');
  const events = new EventSource('/api/v1/events');
  let opened = false;
  events.addEventListener('open', () => {
    live.dataset.live = 'live';
    live.textContent = 'live';
    // After a reconnect the events in between are gone: load the whole state again.
    if (opened) load().catch(showError);
    opened = true;
  });
  events.addEventListener('error', () => {
    live.dataset.live = 'reconnecting';
    live.textContent = 'reconnecting…';
  });
  events.addEventListener('agent', (e) => {
    const a = JSON.parse(e.data);
    if (a.state === 'removed') state.agents.delete(a.id);
    else state.agents.set(a.id, a);
    schedule(renderFleet);
    schedule(renderPhase);
    schedule(renderRoutes);
  });
  events.addEventListener('routes', (e) => {
    if (JSON.parse(e.data).version !== state.version) loadRoutes().catch(showError);
  });
  events.addEventListener('operation', refreshOperations);
  events.addEventListener('progress', refreshOperations);
  events.addEventListener('point', (e) => {
    const { agent, point } = JSON.parse(e.data);
    const pts = state.history.get(agent) ?? [];
    pts.push(point);
    // The controller keeps an hour; so does the page.
    while (pts.length && pts[0].t < point.t - 3_600_000) pts.shift();
    state.history.set(agent, pts);
    schedule(renderCharts);
    schedule(renderFleet);
  });
}

load().then(follow, showError);
