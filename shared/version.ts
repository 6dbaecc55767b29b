import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What is running: the package version, the git commit it was built from (when known) and the Node.js version. */
export interface BuildInfo {
  version: string;
  /** null when unknown (JSON keeps the key). */
  commit: string | null;
  node: string;
}

/** The directory above this module: the checkout when run from the sources, dist/ when compiled. */
const CODE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The file `npm run build` writes into dist/ with the commit it compiled: an installed copy has no .git to ask. */
export const COMMIT_FILE = 'commit';

/** The directory of the nearest package.json at or above CODE_ROOT: the package's own, from the sources and dist/ alike. */
function packageRoot(): string {
  for (let dir = CODE_ROOT; dirname(dir) !== dir; dir = dirname(dir)) if (existsSync(join(dir, 'package.json'))) return dir;
  return CODE_ROOT;
}

/**
 * The short commit of the checkout at `dir`, or undefined when there is none to ask: no .git right there (an
 * installed copy must not report the commit of a repository it happens to sit in), git missing, or git refusing
 * (a checkout owned by another user, a directory it may not read).
 */
export function gitCommit(dir: string): string | undefined {
  if (!existsSync(join(dir, '.git'))) return undefined;
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function stampedCommit(): string | undefined {
  try {
    return readFileSync(join(CODE_ROOT, COMMIT_FILE), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

let cached: BuildInfo | undefined;

/** Read once, when first asked (`--version`, the build_info metric): ordinary commands never spawn git. */
export function buildInfo(): BuildInfo {
  if (!cached) {
    const root = packageRoot();
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    cached = { version, commit: stampedCommit() ?? gitCommit(root) ?? null, node: process.version };
  }
  return cached;
}
