import { readFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { RouteTable, type Route } from '../shared/routes.js';

const FILE = 'routes.json';

interface Persisted {
  version: number;
  routes: Route[];
  appliedAt: number;
}

/** The last applied table, so an agent restarts with it before (or without) reaching its controller. */
export function loadRouteState(dataDir: string): RouteTable | undefined {
  let text: string;
  try {
    text = readFileSync(join(dataDir, FILE), 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
  const doc = JSON.parse(text) as Persisted;
  return new RouteTable(doc.routes, doc.version);
}

/**
 * temp file + fsync + rename + directory fsync: after a crash the file is the old table or the new, never half.
 * Asynchronous (libuv's thread pool), so the fsyncs do not stall the event loop: SMTP sessions and deliveries
 * go on meanwhile, and agents sharing a process (tests, the convergence bench) persist in parallel.
 */
export async function saveRouteState(dataDir: string, table: RouteTable): Promise<void> {
  const file = join(dataDir, FILE);
  const tmp = `${file}.tmp`;
  const doc: Persisted = { version: table.version, routes: [...table.routes], appliedAt: Date.now() };
  const fh = await open(tmp, 'w', 0o640);
  try {
    await fh.writeFile(JSON.stringify(doc, null, 2));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
