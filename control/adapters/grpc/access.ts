import { Metadata, ResponderBuilder, ServerInterceptingCall, ServerListenerBuilder, status, type ServerInterceptor } from '@grpc/grpc-js';
import { operatorTokenList, type ControllerConfig, type OperatorToken } from '../../../shared/config.js';
import type { AgentCommand } from '../../../shared/wire.js';
import { bearerMatches, bearerSecret, readOnlyDenied, secretMatches } from './grpc-util.js';

/** Who an agent token says the caller is: any agent (the shared token) or one agent id (a per-agent token). */
export type AgentIdentity = { ok: false } | { ok: true; agentId: string | undefined };

/** What an operator token lets its holder do: everything, or read. */
export type OperatorRole = 'admin' | 'viewer';

/**
 * AdminService methods a viewer token may call: they change nothing. QueueCommand carries reads (list, show, shape,
 * dry runs) and writes (flush, remove, retry, hold, release); the service checks its kind (isReadOnlyCommand) once
 * the request has been read.
 */
const READ_ONLY_METHODS: ReadonlySet<string> = new Set(['ListRoutes', 'Status', 'Watch', 'GetOperation', 'Follow', 'ListRecipients', 'QueueCommand', 'ListAudit']);

/** May a caller with `role` call AdminService `method` (its name, e.g. "Status")? */
export function mayCall(role: OperatorRole | undefined, method: string): boolean {
  return role === 'admin' || (role === 'viewer' && READ_ONLY_METHODS.has(method));
}

/**
 * Is a queue command a read (a viewer may send it)? Listing, showing, the shape, and a --dry-run of a change: each
 * answers from the queue and changes nothing. Named by kind here, so a new read is allowed in one place.
 */
export function isReadOnlyCommand(command: AgentCommand): boolean {
  switch (command.kind) {
    case 'queueList':
    case 'queueShow':
    case 'queueShape':
    case 'routePreview':
    case 'routeTable':
    case 'shadowList':
      return true;
    case 'queueRemove':
    case 'queueRetry':
    case 'queueHold':
    case 'queueRelease':
      return command.dryRun;
    case 'flush':
      return false;
  }
}

const AGENT_SERVICE = '/mxswitch.v1.AgentService/';
const ADMIN_SERVICE = '/mxswitch.v1.AdminService/';

/** The controller's bearer tokens and what each lets a caller do. */
export class Access {
  private readonly perAgent: [string, string][];
  private readonly operators: readonly OperatorToken[];

  constructor(private readonly tokens: ControllerConfig['tokens']) {
    this.perAgent = Object.entries(tokens.agents ?? {});
    this.operators = operatorTokenList(tokens);
  }

  /** The role of an `authorization: Bearer` token in gRPC metadata. */
  operator(metadata: Metadata): OperatorRole | undefined {
    return this.operatorOf(bearerSecret(metadata.get('authorization')[0]));
  }

  /** The role of a presented secret (a bearer token, a login form's token); undefined for none or any other. */
  operatorOf(secret: string | undefined): OperatorRole | undefined {
    return this.holder(secret)?.role;
  }

  /** Who holds the caller's token, for the audit trail: the token's name ("admin" for a single admin token). */
  actor(metadata: Metadata): string {
    return this.holder(bearerSecret(metadata.get('authorization')[0]))?.name ?? 'unknown';
  }

  private holder(secret: string | undefined): OperatorToken | undefined {
    // Every token compared every time (constant time each), so the time taken does not tell which one it was.
    let found: OperatorToken | undefined;
    for (const o of this.operators) if (secretMatches(secret, o.token)) found = o;
    return found;
  }

  agent(metadata: Metadata): AgentIdentity {
    if (this.tokens.agent !== undefined && bearerMatches(metadata, this.tokens.agent)) return { ok: true, agentId: undefined };
    // Every entry is compared (constant time each), so the time taken does not tell which id a token belongs to.
    let agentId: string | undefined;
    for (const [id, token] of this.perAgent) if (bearerMatches(metadata, token)) agentId = id;
    return agentId === undefined ? { ok: false } : { ok: true, agentId };
  }

  /**
   * Refuses a call without a valid token when its metadata arrives, before grpc-js reads (and buffers, up to the
   * message size limit) a single request message: an unauthenticated client costs no memory. The services check
   * again (and the agent session binds a per-agent token to its Hello).
   */
  interceptor(): ServerInterceptor {
    return (method, call) =>
      new ServerInterceptingCall(
        call,
        new ResponderBuilder()
          .withStart((next) =>
            next(
              new ServerListenerBuilder()
                .withOnReceiveMetadata((metadata, accept) => {
                  const path = method.path;
                  if (path.startsWith(AGENT_SERVICE) && this.agent(metadata).ok) return accept(metadata);
                  const role = path.startsWith(ADMIN_SERVICE) ? this.operator(metadata) : undefined;
                  const name = path.slice(ADMIN_SERVICE.length);
                  if (mayCall(role, name)) return accept(metadata);
                  if (role === 'viewer') return call.sendStatus({ code: status.PERMISSION_DENIED, details: readOnlyDenied(name).message, metadata: new Metadata() });
                  const what = path.startsWith(AGENT_SERVICE) ? 'agent' : 'admin';
                  call.sendStatus({ code: status.UNAUTHENTICATED, details: `invalid or missing ${what} token`, metadata: new Metadata() });
                })
                .build(),
            ),
          )
          .build(),
      );
  }
}
