import { Metadata, ResponderBuilder, ServerInterceptingCall, ServerListenerBuilder, status, type ServerInterceptor } from '@grpc/grpc-js';
import type { ControllerConfig } from '../../../shared/config.js';
import { bearerMatches } from './grpc-util.js';

/** Who an agent token says the caller is: any agent (the shared token) or one agent id (a per-agent token). */
export type AgentIdentity = { ok: false } | { ok: true; agentId: string | undefined };

const AGENT_SERVICE = '/mxswitch.v1.AgentService/';
const ADMIN_SERVICE = '/mxswitch.v1.AdminService/';

/** The controller's bearer tokens and what each lets a caller do. */
export class Access {
  private readonly perAgent: [string, string][];

  constructor(private readonly tokens: ControllerConfig['tokens']) {
    this.perAgent = Object.entries(tokens.agents ?? {});
  }

  admin(metadata: Metadata): boolean {
    return bearerMatches(metadata, this.tokens.admin);
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
                  const allowed = path.startsWith(AGENT_SERVICE) ? this.agent(metadata).ok : path.startsWith(ADMIN_SERVICE) ? this.admin(metadata) : false;
                  if (allowed) return accept(metadata);
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
