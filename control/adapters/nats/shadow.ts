import type { KV } from '@nats-io/kv';
import { errorMessage } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { decodeJson, encodeJson, isWrongLastSequence, SHADOW_PLAN_KEY, type AgentShadowValue } from '../../../shared/nats.js';
import { ShadowAssignment } from '../../../proto/gen/mxswitch/v1/shadow.js';
import { freshShadowPlanState, type ShadowPlan, type ShadowPlanState, type ShadowStateStore } from '../../core/shadow-plan.js';

/**
 * The shadow plan (pairing, credential secret, takeovers) as one value under `shadow.plan` in `F-ops` (agents
 * cannot read that bucket: the secret derives every pair's credential). Loaded once at start; every save is
 * written in order, one after the other, and `written()` resolves once the last one is in NATS — the publisher
 * puts assignments only after the plan they come from, as the gRPC controller commits before it sends.
 */
export class NatsShadowStore implements ShadowStateStore {
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly kv: KV,
    private state: ShadowPlanState | undefined,
    private readonly log: Logger,
  ) {}

  /**
   * The plan in NATS, created when there is none. Created with compare-and-set, so replicas starting together
   * share one secret (and so hand out the same pair credentials) whichever writes first.
   */
  static async open(kv: KV, log: Logger): Promise<NatsShadowStore> {
    for (;;) {
      const e = await kv.get(SHADOW_PLAN_KEY);
      if (e && e.operation === 'PUT') return new NatsShadowStore(kv, decodeJson<ShadowPlanState>(e), log);
      const fresh = freshShadowPlanState();
      try {
        await kv.create(SHADOW_PLAN_KEY, encodeJson(fresh));
        return new NatsShadowStore(kv, fresh, log);
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
      }
    }
  }

  load(): ShadowPlanState | undefined {
    return this.state && structuredClone(this.state);
  }

  save(state: ShadowPlanState): void {
    const value = encodeJson(state);
    this.state = structuredClone(state);
    this.chain = this.chain.then(() => this.put(value, state.version));
  }

  /** Resolves once every save so far is in NATS (or the store was closed). */
  written(): Promise<void> {
    return this.chain;
  }

  /** Stops retrying (the controller stops): the next controller starts from the last plan written and decides again from the agents' reports. */
  close(): Promise<void> {
    this.closed = true;
    return this.chain;
  }

  private async put(value: Uint8Array, version: number): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        await this.kv.put(SHADOW_PLAN_KEY, value);
        return;
      } catch (err) {
        // NATS down: the plan is not published until it is saved, so keep trying (a newer save waits behind this one).
        if (attempt === 0) this.log.warn({ version, error: errorMessage(err) }, 'shadow plan not written to NATS; retrying');
        await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** attempt)));
      }
    }
  }
}

/**
 * Publishes each member's assignment under `F-shadow/<agentId>` (the JSON form of the gRPC ShadowAssignment) after
 * the plan it comes from is saved; a value is rewritten only when it changed, and a former member's key is deleted.
 * Agents watch their own key; the latest value is what a (re)starting agent applies first.
 */
export class NatsShadowPublisher {
  private readonly published = new Map<string, string>();
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly onChange = () => void this.publish();

  constructor(
    private readonly kv: KV,
    private readonly plan: ShadowPlan,
    private readonly store: NatsShadowStore,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    for await (const k of await this.kv.keys()) this.published.set(k, '');
    this.plan.on('change', this.onChange);
    await this.publish();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.plan.off('change', this.onChange);
    await this.store.close();
    await this.running;
  }

  /** The newest plan's assignments; a change during a round starts another. */
  publish(): Promise<void> {
    this.again = true;
    this.running ??= (async () => {
      try {
        while (this.again && !this.stopped) {
          this.again = false;
          await this.store.written();
          await this.round();
        }
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async round(): Promise<void> {
    const members = this.plan.members();
    for (const id of members) {
      if (this.stopped) return;
      const a = this.plan.assignmentFor(id);
      if (!a) continue;
      const text = JSON.stringify(ShadowAssignment.toJSON(ShadowAssignment.fromPartial(a)));
      if (this.published.get(id) === text) continue;
      try {
        await this.kv.put(id, new TextEncoder().encode(text));
        this.published.set(id, text);
      } catch (err) {
        this.log.warn({ agent: id, version: a.version, error: errorMessage(err) }, 'shadow assignment not written to NATS; retrying');
        this.again = true;
        await new Promise((r) => setTimeout(r, 500));
        return;
      }
    }
    for (const id of [...this.published.keys()]) {
      if (members.includes(id)) continue;
      try {
        await this.kv.delete(id);
        this.published.delete(id);
      } catch (err) {
        this.log.warn({ agent: id, error: errorMessage(err) }, 'shadow assignment of a former member not deleted from NATS');
      }
    }
  }
}

/** What an agent's `F-agents` value says of its shadowing, into the plan (its Hello and its report over gRPC). */
export function observeShadow(plan: ShadowPlan, id: string, shadow: AgentShadowValue | undefined, at: number): void {
  plan.hello(id, shadow ? { address: shadow.address, takeoverAfterMs: shadow.takeoverAfterMs, queueId: shadow.queueId } : undefined);
  if (shadow?.report) plan.report(id, shadow.report, at);
}
