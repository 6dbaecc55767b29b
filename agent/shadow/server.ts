import { createHash, timingSafeEqual } from 'node:crypto';
import { Server, status, type Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../../shared/logger.js';
import { errorMessage } from '../../shared/errors.js';
import { parseHostPort } from '../../shared/units.js';
import { ReplicateResponse, ShadowServiceService, type ReplicateRequest } from '../../proto/gen/mxswitch/v1/shadow.js';
import type { PeerRef } from './assignment.js';
import { holdFromWire } from './hold-wire.js';
import { CallStaging } from './staging.js';
import type { ShadowStoreGroup } from './store-group.js';
import type { ShadowTransport } from './tls.js';

type Call = ServerDuplexStream<ReplicateRequest, ReplicateResponse>;

/** Constant-time: both sides hashed first, so lengths leak nothing either. */
function sameSecret(presented: string, expected: string): boolean {
  return timingSafeEqual(createHash('sha256').update(presented).digest(), createHash('sha256').update(expected).digest());
}

/** Client id and credential of a call (`x-mxswitch-agent`, `authorization: Bearer ...`). */
export function callIdentity(md: Metadata): { agentId: string; secret: string } | undefined {
  const agentId = md.get('x-mxswitch-agent')[0];
  const auth = md.get('authorization')[0];
  if (typeof agentId !== 'string' || typeof auth !== 'string' || !auth.startsWith('Bearer ')) return undefined;
  return { agentId, secret: auth.slice(7) };
}

const denied = (code: status, details: string) => Object.assign(new Error(details), { code, details });

/**
 * The peer side of shadow redundancy: ShadowService on shadow.listen. Only the clients the controller paired
 * with this agent may call, each with the credential handed out for the pair (and with `shadow.tls`, a client
 * certificate naming the same agent id); a client no longer paired (taken
 * over, reassigned) is cut off at its next batch. Batches are stored through the group commit and answered in
 * order, each once it is durable (parts of large copies: once staged, see CallStaging).
 */
export class ShadowServer {
  private readonly server = new Server({ 'grpc.max_receive_message_length': 128 * 1024 * 1024 });
  private clients = new Map<string, string>();
  /** This agent's own peer: it may probe us (empty batches only) with our pair's credential. */
  private peer: PeerRef | undefined;
  private readonly calls = new Set<Call>();
  port = 0;

  constructor(
    private readonly listen: string,
    private readonly group: ShadowStoreGroup,
    private readonly transport: ShadowTransport,
    private readonly log: Logger,
  ) {
    this.server.addService(ShadowServiceService, { replicate: (call: Call) => this.replicate(call) });
  }

  /** The clients now allowed, and the peer that may probe us (from the newest assignment). */
  setPairs(clients: readonly PeerRef[], peer: PeerRef | undefined): void {
    this.clients = new Map(clients.map((c) => [c.agentId, c.credential]));
    this.peer = peer;
  }

  async start(): Promise<number> {
    const { host, port } = parseHostPort(this.listen);
    const bindHost = host.includes(':') ? `[${host}]` : host;
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync(`${bindHost}:${port}`, this.transport.server(), (err, p) => (err ? reject(err) : resolve(p))));
    return this.port;
  }

  stop(): Promise<void> {
    for (const c of this.calls) c.end();
    return new Promise((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 500);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private allowed(call: Call): string | undefined {
    const who = this.identified(call);
    if (!who) return undefined;
    const expected = this.clients.get(who.agentId);
    return expected !== undefined && sameSecret(who.secret, expected) ? who.agentId : undefined;
  }

  /** Our peer probing whether we are up (see reachability.ts). */
  private probing(call: Call): boolean {
    const who = this.identified(call);
    return !!who && !!this.peer && who.agentId === this.peer.agentId && sameSecret(who.secret, this.peer.credential);
  }

  /** The id a call claims, when its client certificate (under mutual TLS) names it too. */
  private identified(call: Call): { agentId: string; secret: string } | undefined {
    const who = callIdentity(call.metadata);
    return who && this.transport.names(call.getAuthContext().sslPeerCertificate, who.agentId) ? who : undefined;
  }

  private replicate(call: Call): void {
    const origin = this.allowed(call);
    if (!origin && this.probing(call)) {
      // A probe stores nothing: each empty batch is answered, anything else refused.
      call.on('data', (req: ReplicateRequest) => {
        if (req.copies.length || req.discards.length || req.holds.length || req.parts.length) call.emit('error', denied(status.PERMISSION_DENIED, 'a probe carries no copies'));
        else call.write(ReplicateResponse.fromPartial({ batchId: req.batchId }));
      });
      call.on('end', () => call.end());
      return;
    }
    if (!origin) {
      this.log.warn({ peer: call.getPeer() }, 'shadow call refused: not a paired client or wrong credential');
      call.emit('error', denied(status.UNAUTHENTICATED, 'not a paired shadow client'));
      return;
    }
    this.calls.add(call);
    const staging = new CallStaging(this.group, origin);
    // Answers go out in the order the batches came, each once its transaction committed.
    let answered: Promise<void> = Promise.resolve();
    call.on('data', (req: ReplicateRequest) => {
      if (this.allowed(call) !== origin) {
        call.emit('error', denied(status.PERMISSION_DENIED, `${origin} is no longer a shadow client here`));
        return;
      }
      // Staged before the copies of the same batch are committed (the writer takes them in this order).
      const staged = Promise.all(req.parts.map((p) => staging.part(p)));
      const copies = req.copies.map((c) => ({ id: c.id, sender: c.sender, recipients: c.recipients, body: c.body, arrivedAt: c.arrivedAtMs, dsn: c.dsn, holds: c.holds.map(holdFromWire), staged: staging.close(c) }));
      const discards = req.discards.map((d) => ({ id: d.id, recipients: d.recipients }));
      const holds = req.holds.map((n) => ({ id: n.id, holds: n.holds.map(holdFromWire) }));
      // A batch of parts only commits nothing: no fsync per part.
      const rows = copies.length || discards.length || holds.length ? this.group.store({ origin, copies, discards, holds }) : Promise.resolve([]);
      const committed = rows.then(
        (incomplete) => (incomplete.length ? `parts missing for ${incomplete.join(', ')}: not kept` : ''),
        (err: unknown) => {
          for (const c of copies) staging.dropped(c.id, c.staged);
          throw err;
        },
      );
      const stored = Promise.all([staged, committed]).then(
        ([, error]) => error,
        (err: unknown) => {
          this.log.error({ err, origin }, 'shadow copies could not be stored');
          return errorMessage(err) || 'store failed';
        },
      );
      answered = answered.then(async () => {
        const error = await stored;
        try {
          call.write(ReplicateResponse.fromPartial({ batchId: req.batchId, error }));
        } catch {
          // the stream is gone; the client resends what it has no answer for
        }
      });
    });
    const done = () => {
      if (this.calls.delete(call)) staging.end();
    };
    call.on('end', () => {
      void answered.then(() => call.end());
      done();
    });
    call.on('error', done);
    call.on('cancelled', done);
  }
}
