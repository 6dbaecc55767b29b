import { parentPort, workerData } from 'node:worker_threads';
import { PassThrough, pipeline, Readable, Transform } from 'node:stream';
import { pino } from 'pino';
import { Delivery } from './delivery.js';
import type { DeliveryThreadInit, FromDeliveryThread, ToDeliveryThread } from './delivery-client.js';

/**
 * The delivery thread: outbound SMTP (nodemailer, its pools per next hop, MX lookups) on the second core, so
 * that building and sending messages does not take turns with the SMTP sessions coming in. The scheduler stays
 * on the agent's event loop and hands each transaction over (see DeliveryClient).
 */

const port = parentPort!;
const init = workerData as DeliveryThreadInit;
const post = (m: FromDeliveryThread, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
// Records go to the agent's own logger (its bindings, its destination) as the JSON lines pino makes here.
const log = pino({ level: init.logLevel, base: null, timestamp: false }, { write: (line: string) => post({ log: line }) });
const delivery = new Delivery(init.config, init.heloName, log, init.options);

/** Streams of large messages the agent is sending over, by stream id: a new one for each attempt. */
const streams = new Map<number, PassThrough>();
let lastStream = 0;

/** A large message: each attempt asks the agent for a new stream of its stored parts. */
function streamedBody(sendId: number): () => Readable {
  return () => {
    const into = new PassThrough();
    const streamId = ++lastStream;
    streams.set(streamId, into);
    into.once('close', () => streams.delete(streamId));
    post({ wantStream: sendId, streamId });
    return into;
  };
}

// Chunks of a transferred stream arrive as plain Uint8Arrays; nodemailer expects Buffers.
const asBuffers = () => new Transform({ transform: (chunk: Uint8Array, _enc, done) => done(null, Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)) });

port.on('message', (m: ToDeliveryThread) => {
  switch (m.op) {
    case 'send': {
      const body = m.body ? Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength) : streamedBody(m.id);
      void delivery.send(m.target, m.tlsRequired, m.envelope, body).then((attempt) => post({ id: m.id, attempt }));
      return;
    }
    case 'stream': {
      const into = streams.get(m.streamId);
      if (!into) return void m.stream.cancel();
      // pipeline, not pipe: a read error fails the attempt (into destroyed with it), and an attempt that ends
      // early (next hop gone mid-DATA, timeout) destroys the transferred stream, which cancels the agent's reader.
      pipeline(Readable.fromWeb(m.stream), asBuffers(), into, () => {});
      return;
    }
    case 'close':
      delivery.close();
      post({ closed: true });
  }
});
