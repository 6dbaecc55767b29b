import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { parseHostPort } from './units.js';

export interface Health {
  ok: boolean;
  detail: Record<string, unknown>;
}

/** /metrics (Prometheus text format) and /healthz (200 or 503 with a JSON body) for agent and controller. */
export async function startHttp(listen: string, registry: Registry, health: () => Health): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else if (path === '/healthz') {
      const h = health();
      res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h));
    } else {
      res.writeHead(404).end();
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
