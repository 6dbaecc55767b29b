import { readFileSync } from 'node:fs';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { ControllerConfig } from '../../../shared/config.js';
import { ConfigError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { parseHostPort } from '../../../shared/units.js';
import { AdminServiceService, type AdminServiceServer } from '../../../proto/gen/mxswitch/v1/admin.js';
import { AgentServiceService } from '../../../proto/gen/mxswitch/v1/agent.js';
import type { Access } from './access.js';
import { isLoopback, serverOptions } from './grpc-util.js';
import type { Sessions } from './sessions.js';

/** gRPC credentials from config: TLS (optionally mutual) or plaintext, which is allowed off loopback only on request. */
function credentials(config: ControllerConfig, host: string, log: Logger): ServerCredentials {
  const tls = config.grpc.tls;
  if (tls) {
    const ca = tls.ca ? readFileSync(tls.ca) : null;
    log.info({ mutual: tls.requireClientCert }, tls.requireClientCert ? 'gRPC with mutual TLS' : 'gRPC with TLS');
    return ServerCredentials.createSsl(ca, [{ cert_chain: readFileSync(tls.cert), private_key: readFileSync(tls.key) }], tls.requireClientCert);
  }
  if (!isLoopback(host) && !config.grpc.allowInsecureRemote) {
    throw new ConfigError('grpc.listen', `${config.grpc.listen} is not a loopback address and no grpc.tls is configured; tokens would cross the network in plaintext. Configure grpc.tls, or set grpc.allowInsecureRemote: true`);
  }
  log.warn({ listen: config.grpc.listen }, 'gRPC is plaintext (no grpc.tls configured)');
  return ServerCredentials.createInsecure();
}

/** Checks the listener's credentials before anything else starts (a config error stops the controller at once). */
export function grpcCredentials(config: ControllerConfig, log: Logger): ServerCredentials {
  return credentials(config, parseHostPort(config.grpc.listen).host, log);
}

/**
 * The controller's gRPC server: the admin API, and the agent session service unless agents talk to NATS.
 * Resolves with the bound port; a listen failure is a ConfigError naming grpc.listen.
 */
export async function serveGrpc(opts: { config: ControllerConfig; creds: ServerCredentials; access: Access; admin: AdminServiceServer; sessions: Sessions | undefined }): Promise<{ server: Server; port: number }> {
  const server = new Server({ ...serverOptions, interceptors: [opts.access.interceptor()] });
  if (opts.sessions) server.addService(AgentServiceService, { session: opts.sessions.handle });
  server.addService(AdminServiceService, opts.admin);
  const { host, port } = parseHostPort(opts.config.grpc.listen);
  const bindHost = host.includes(':') ? `[${host}]` : host;
  try {
    const bound = await new Promise<number>((resolve, reject) => server.bindAsync(`${bindHost}:${port}`, opts.creds, (err, p) => (err ? reject(err) : resolve(p))));
    return { server, port: bound };
  } catch (err) {
    throw new ConfigError('grpc.listen', `cannot listen on ${opts.config.grpc.listen}: ${(err as Error).message}`);
  }
}

/** Stops taking calls: waits up to a second for the calls under way, then cuts them. */
export async function stopGrpc(server: Server): Promise<void> {
  await new Promise<void>((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 1000);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
