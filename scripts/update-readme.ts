// `npm run docs`: regenerates the README's config reference tables from the config schemas.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderReadme } from '../shared/config-docs.js';

const file = join(import.meta.dirname, '..', 'README.md');
writeFileSync(file, renderReadme(readFileSync(file, 'utf8')));
console.log('README.md config reference updated');
