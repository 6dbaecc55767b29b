import { Worker } from 'node:worker_threads';

/**
 * Starts the module `entry` ("./writer-thread", no extension), a sibling of the module at `callerUrl`, in a worker
 * thread. Compiled (dist/), its entry is the .js beside the caller. Run from source (tsx: tests, the bench, the
 * demo), a worker on Node 20 does not get the --import hooks that load TypeScript, so the entry goes through
 * tsx's own API instead.
 */
export function startModuleWorker(callerUrl: string, entry: string, workerData: unknown): Worker {
  if (!callerUrl.endsWith('.ts')) return new Worker(new URL(`${entry}.js`, callerUrl), { workerData });
  const source = new URL(`${entry}.ts`, callerUrl).href;
  const load = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => tsx.tsImport(${JSON.stringify(source)}, ${JSON.stringify(callerUrl)}))`;
  return new Worker(load, { eval: true, workerData });
}
