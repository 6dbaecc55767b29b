import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { renderReadme } from '../shared/config-docs.js';
import { REPO } from './helpers/process.js';

test('README config reference matches the schemas (run `npm run docs` after changing a key)', () => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  assert.equal(renderReadme(readme), readme);
});
