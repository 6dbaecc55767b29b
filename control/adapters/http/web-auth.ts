import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Access, OperatorRole } from '../grpc/access.js';
import { bearerSecret } from '../grpc/grpc-util.js';

export const SESSION_COOKIE = 'mxswitch_session';
const SESSION_TTL_MS = 12 * 3_600_000;
/** Logins kept at once; the oldest goes first (a login loop cannot grow memory). */
const MAX_SESSIONS = 1_000;

/** The value of cookie `name` in a request's Cookie header. */
function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i !== -1 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * Who an HTTP request comes from: `Authorization: Bearer <viewer or admin token>`, or a session cookie set by the
 * login form. The cookie carries a random session id, never the token (a stolen cookie dies with its session and
 * the controller's restart); it is HttpOnly (no script reads it) and SameSite=Strict (no other site's page sends it).
 */
export class WebAuth {
  private readonly sessions = new Map<string, { role: OperatorRole; expires: number }>();

  constructor(
    private readonly access: Access,
    private readonly now: () => number = Date.now,
  ) {}

  role(req: IncomingMessage): OperatorRole | undefined {
    const bearer = bearerSecret(req.headers.authorization);
    if (bearer !== undefined) return this.access.operatorOf(bearer);
    const id = cookie(req, SESSION_COOKIE);
    const session = id === undefined ? undefined : this.sessions.get(id);
    if (!session) return undefined;
    if (session.expires <= this.now()) {
      this.sessions.delete(id!);
      return undefined;
    }
    return session.role;
  }

  /** A login with `token`: the Set-Cookie value of a new session, or undefined when the token is neither viewer nor admin. */
  login(token: string): string | undefined {
    const role = this.access.operatorOf(token);
    if (!role) return undefined;
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, { role, expires: this.now() + SESSION_TTL_MS });
    return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_TTL_MS / 1000}`;
  }

  /** Ends the request's session (if any): the Set-Cookie value that clears the cookie. */
  logout(req: IncomingMessage): string {
    const id = cookie(req, SESSION_COOKIE);
    if (id !== undefined) this.sessions.delete(id);
    return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`;
  }
}
