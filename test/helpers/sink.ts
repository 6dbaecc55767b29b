import { CaptureServer } from '../../control/demo/capture-server.js';

export type { CapturedMessage as Received } from '../../control/demo/capture-server.js';

/** The tests' next hop: a real SMTP server on loopback that stores what it receives (see CaptureServer). */
export class Sink extends CaptureServer {
  constructor(tls?: { key: Buffer; cert: Buffer }) {
    super('sink.test', tls);
  }
}
