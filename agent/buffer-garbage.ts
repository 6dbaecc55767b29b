import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A large message is nothing but Buffers passing through (socket chunks, 1 MB parts, their copies to the writer
 * thread, parts read back for delivery), and V8 frees a dead Buffer's memory only at a collection. Left to itself
 * it collected them late (most live long enough to reach the old generation, which it collects at its ~64 MB
 * external-memory limit per thread), so a 50 MB message raised the agent's RSS by 1.9-2.4x its size (bench
 * `large`). Measured, three runs each: a young-generation collection every 1 or 2 MB, 0.9-1.9x (parts still in
 * flight get promoted); a full one every 16 MB, 1.3-1.4x; every 8 MB, 0.96-1.13x, each 0.3-14 ms on this thread
 * (a few per large message, none for small ones).
 *
 * V8's collector is reachable only through its `gc` extension: the flag is set just long enough to take the
 * function from a fresh context, so no global `gc` appears in the agent's own context.
 */
const COLLECT_EVERY = 8 * 1024 * 1024;

/** A full collection, synchronous (`gc({type: 'major'})` of Node 20's V8 left dead Buffers behind in a test). */
type Collect = () => void;

let collect: Collect | undefined;
let sinceLast = 0;

function collector(): Collect {
  if (!collect) {
    setFlagsFromString('--expose-gc');
    collect = runInNewContext('gc') as Collect;
    setFlagsFromString('--no-expose-gc');
  }
  return collect;
}

/** `bytes` of Buffers this thread is done with (or soon will be); collects once enough have passed. */
export function buffersDone(bytes: number): void {
  sinceLast += bytes;
  if (sinceLast < COLLECT_EVERY) return;
  sinceLast = 0;
  collector()();
}
