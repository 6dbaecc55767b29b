/**
 * The bench's own sink in its own process (used when Postfix's smtp-sink is not installed): a counting SMTP
 * server on `127.0.0.1:PORT` that keeps nothing and reports `mesg=N` on stdout (like `smtp-sink -c`).
 */
import { CaptureServer } from '../../control/demo/capture-server.js';

const port = Number(process.argv[2]);
const server = await new CaptureServer('sink.bench').start(port);
let count = 0;
let reported = -1;
const report = () => {
  if (count !== reported) process.stdout.write(`mesg=${(reported = count)}\r`);
};
// CaptureServer keeps every message; the bench only counts them, so each one is dropped once counted.
setInterval(() => {
  count += server.messages.length;
  server.messages.length = 0;
  report();
}, 5).unref();
process.stdout.write(`ready=${server.port}\r`);
process.on('SIGTERM', () => void server.stop().then(() => process.exit(0)));
setInterval(() => undefined, 1 << 30);
