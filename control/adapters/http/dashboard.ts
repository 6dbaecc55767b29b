import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../../../shared/logger.js';
import type { HttpFallback } from '../../../shared/http.js';
import { FleetHistory, type HistoryOptions } from '../../core/history.js';
import type { Access } from '../grpc/access.js';
import { sendJson, serveApi, type ApiDeps } from './api.js';
import { loadAssets, type Asset } from './assets.js';
import { WebAuth } from './web-auth.js';

export interface DashboardDeps extends Omit<ApiDeps, 'history'> {
  access: Access;
  log: Logger;
  history?: Partial<HistoryOptions>;
}

/** A login form's body is one token: anything longer is not one. */
const MAX_LOGIN_BODY = 4096;

const PAGE_HEADERS = {
  // Only this controller's own files run or load; the page cannot be framed by another site.
  'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/**
 * The controller's web side on `http.listen` (besides /metrics and /healthz): the dashboard page and its files,
 * the login form, and the read-only JSON API. Every API call and the page need the viewer or admin token
 * (Bearer, or the login form's session cookie); without one the API answers 401 and the page is the login form.
 */
export class Dashboard {
  readonly history: FleetHistory;
  private readonly auth: WebAuth;
  private readonly assets = loadAssets();

  constructor(private readonly d: DashboardDeps) {
    this.history = new FleetHistory(d.registry, d.history);
    this.auth = new WebAuth(d.access);
  }

  start(): void {
    this.history.start();
  }

  stop(): void {
    this.history.stop();
  }

  readonly handle: HttpFallback = (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://controller');
    } catch {
      return void res.writeHead(400).end();
    }
    const path = url.pathname;
    if (path === '/login' && req.method === 'POST') return this.login(req, res);
    if (path === '/logout' && req.method === 'POST') return void res.writeHead(303, { location: '/', 'set-cookie': this.auth.logout(req) }).end();
    const asset = this.assets.files.get(path);
    if (asset?.public && req.method === 'GET') return this.serve(res, asset);
    const role = this.auth.role(req);
    if (path.startsWith('/api/')) {
      if (!role) {
        this.d.log.warn({ peer: req.socket.remoteAddress, path }, 'HTTP API call rejected: invalid or missing viewer/admin token');
        res.setHeader('www-authenticate', 'Bearer realm="mxswitch"');
        return sendJson(res, 401, { error: 'UNAUTHENTICATED', message: 'invalid or missing token: Authorization: Bearer <viewer or admin token>' });
      }
      if (!path.startsWith('/api/v1/')) return sendJson(res, 404, { error: 'NOT_FOUND', message: `no API ${path} (the API is /api/v1/)` });
      return serveApi({ ...this.d, history: this.history }, req, res, url);
    }
    if (req.method !== 'GET') return void res.writeHead(405).end();
    if (!asset) return void res.writeHead(404).end();
    if (!role) return this.loginPage(res, 401, '');
    this.serve(res, asset);
  };

  private serve(res: ServerResponse, asset: Asset): void {
    res.writeHead(200, { ...PAGE_HEADERS, 'content-type': asset.type, 'content-length': asset.body.length }).end(asset.body);
  }

  private loginPage(res: ServerResponse, status: number, message: string): void {
    const html = this.assets.loginPage.replace('<!--message-->', message ? `<p class="error">${message}</p>` : '');
    res.writeHead(status, { ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8' }).end(html);
  }

  /** POST /login (form field `token`): a session cookie and back to the page, or the form again with 401. */
  private login(req: IncomingMessage, res: ServerResponse): void {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
      if (body.length > MAX_LOGIN_BODY) {
        req.destroy();
        res.writeHead(413).end();
      }
    });
    req.on('end', () => {
      const cookie = this.auth.login(new URLSearchParams(body).get('token') ?? '');
      if (!cookie) {
        this.d.log.warn({ peer: req.socket.remoteAddress }, 'dashboard login rejected: not the viewer or admin token');
        return this.loginPage(res, 401, 'That is not the viewer or admin token.');
      }
      res.writeHead(303, { location: '/', 'set-cookie': cookie, 'cache-control': 'no-store' }).end();
    });
  }
}
