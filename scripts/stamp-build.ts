// Last step of `npm run build`: records the commit in dist/ (an installed copy has no .git to ask) and makes the
// package's bin executable, so it also runs straight from a checkout like the installed `mxswitch`.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMIT_FILE, gitCommit } from '../shared/version.js';

const root = join(import.meta.dirname, '..');
// MXSWITCH_COMMIT: for builds from a tree without .git, such as a Docker build context.
const commit = process.env.MXSWITCH_COMMIT || gitCommit(root);
if (commit) writeFileSync(join(root, 'dist', COMMIT_FILE), `${commit}\n`);
const { bin } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
for (const file of Object.values(bin)) chmodSync(join(root, file), 0o755);
console.log(`dist/ built${commit ? ` from ${commit}` : ' (commit unknown)'}`);
