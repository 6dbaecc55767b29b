import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from '../shared/build-info-metric.js';
import type { HealthSnapshot } from './health.js';

/** Prometheus view of an agent: every value is read from the live snapshot at scrape time. */
export function agentRegistry(live: () => HealthSnapshot): Registry {
  const registry = new Registry();
  registerBuildInfo(registry);
  // Every metric's collect() reads the snapshot: one scrape takes one snapshot (a queue pass), not one per metric.
  let cached: { at: number; value: HealthSnapshot } | undefined;
  const snapshot = (): HealthSnapshot => {
    const now = Date.now();
    // Timed from the end of the computation: with a large queue one snapshot can take longer than 250 ms.
    if (!cached || now - cached.at > 250) cached = { value: live(), at: Date.now() };
    return cached.value;
  };
  const counter = (name: string, help: string, read: (s: HealthSnapshot) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read(snapshot()));
      },
    });
  counter('mxswitch_agent_messages_accepted_total', 'Messages accepted (250 after commit) since start', (s) => s.counters.accepted);
  counter('mxswitch_agent_smtp_rejected_total', 'Recipients or messages refused at SMTP since start', (s) => s.counters.rejected);
  counter('mxswitch_agent_delivered_total', 'Recipients delivered (next hop said 250) since start', (s) => s.counters.delivered);
  counter('mxswitch_agent_deferred_total', 'Delivery attempts deferred (4xx, network) since start', (s) => s.counters.deferred);
  counter('mxswitch_agent_bounced_total', 'Recipients bounced (5xx or expired) since start', (s) => s.counters.bounced);
  new Gauge({
    name: 'mxswitch_agent_queue_recipients',
    help: 'Recipients in the queue by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const s = snapshot();
      for (const [state, n] of Object.entries(s.byState)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'mxswitch_agent_route_queue_recipients',
    help: 'Recipients in the queue by the route in force for them (its match) and state',
    labelNames: ['route', 'state'],
    registers: [registry],
    collect() {
      // Reset: a route that left the table must not keep its last value.
      this.reset();
      for (const r of snapshot().routes) {
        for (const [state, n] of [['queued', r.queued], ['deferred', r.deferred], ['held', r.held], ['inflight', r.inFlight]] as const) this.set({ route: r.match, state }, n);
      }
    },
  });
  new Gauge({
    name: 'mxswitch_agent_disk_free_bytes',
    help: 'Free space of the file system that holds the queue (dataDir)',
    registers: [registry],
    collect() {
      this.set(snapshot().diskFreeBytes);
    },
  });
  new Gauge({
    name: 'mxswitch_agent_queue_oldest_seconds',
    help: 'Age of the oldest queued message',
    registers: [registry],
    collect() {
      this.set(snapshot().oldestAgeSeconds);
    },
  });
  new Gauge({
    name: 'mxswitch_agent_route_table_version',
    help: 'Version of the routing table in force',
    registers: [registry],
    collect() {
      this.set(snapshot().appliedVersion);
    },
  });
  new Gauge({
    name: 'mxswitch_agent_controller_connected',
    help: '1 when the control channel is up',
    registers: [registry],
    collect() {
      this.set(snapshot().controllerConnected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'mxswitch_unshadowed_messages',
    help: 'Messages in this queue without a confirmed shadow copy at the peer (accepted while it was down, or waiting to be copied to a new peer)',
    registers: [registry],
    collect() {
      this.set(snapshot().shadow?.unshadowed ?? 0);
    },
  });
  new Gauge({
    name: 'mxswitch_shadow_copies',
    help: "Shadow copies this agent keeps for its clients (the agents that copy their mail here)",
    registers: [registry],
    collect() {
      this.set(snapshot().shadow?.shadowCopies ?? 0);
    },
  });
  counter('mxswitch_shadow_taken_over_messages_total', 'Messages of lost agents this agent took over (shadow copies moved into its queue) since start', (s) => s.shadow?.counters.adopted ?? 0);
  counter('mxswitch_shadow_unshadowed_accepted_total', 'Messages accepted with one copy (peer down or slow, onPeerDown accept) since start', (s) => s.shadow?.counters.unshadowedAccepted ?? 0);
  new Gauge({
    name: 'mxswitch_agent_delivering',
    help: "1 when the scheduler delivers; 0 while a restarted agent waits for the controller's current table",
    registers: [registry],
    collect() {
      this.set(snapshot().delivery.open ? 1 : 0);
    },
  });
  return registry;
}

/** Seconds from arrival to delivery: a whole hold or a long deferral lands in the top buckets. */
const LATENCY_BUCKETS = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600];

/** `mxswitch_agent_delivery_latency_seconds` in `registry`: the scheduler observes each delivered recipient. */
export function deliveryLatency(registry: Registry): Histogram {
  return new Histogram({
    name: 'mxswitch_agent_delivery_latency_seconds',
    help: "Time from a message's arrival (250 to the sender) to its delivery (the next hop's 250), per recipient",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
}
