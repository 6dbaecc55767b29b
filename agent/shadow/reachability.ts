import { connect } from 'node:net';
import { parseHostPort } from '../../shared/units.js';

/**
 * Whether something listens on `address` (a TCP connect within `timeoutMs`). What a peer tells the controller
 * about a client before a takeover: "I cannot reach it either". A connect is enough: the question is whether
 * the client's process is up, not whether it trusts us.
 */
export function reachable(address: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let host: string;
    let port: number;
    try {
      ({ host, port } = parseHostPort(address));
    } catch {
      return resolve(false);
    }
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
