import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { parseHostPort } from './units.js';

export interface Health {
  ok: boolean;
  detail: Record<string, unknown>;
}

/** Answers the requests that are not GET /metrics or /healthz. */
export type HttpFallback = (req: IncomingMessage, res: ServerResponse) => void;

const notFound: HttpFallback = (req, res) => void res.writeHead(req.method === 'GET' ? 404 : 405).end();

/**
 * /metrics (Prometheus text format) and /healthz (200 or 503 with a JSON body) for agent and controller; every
 * other request goes to `fallback` (the controller's dashboard and API), 404/405 without one.
 */
export async function startHttp(listen: string, registry: Registry, health: () => Health, fallback: HttpFallback = notFound): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || (path !== '/metrics' && path !== '/healthz')) {
      fallback(req, res);
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else {
      const h = health();
      res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h));
    }
  });
  const { host, port } = parseHostPort(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : port };
}
