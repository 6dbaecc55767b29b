import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
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

/** temp file + fsync + rename + directory fsync: after a crash the file is the old table or the new, never half. */
export function saveRouteState(dataDir: string, table: RouteTable): void {
  const file = join(dataDir, FILE);
  const tmp = `${file}.tmp`;
  const doc: Persisted = { version: table.version, routes: [...table.routes], appliedAt: Date.now() };
  const fd = openSync(tmp, 'w', 0o640);
  try {
    writeSync(fd, JSON.stringify(doc, null, 2));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
