#!/usr/bin/env node
// Runs the TypeScript sources through tsx so the installed command and `npm run` use the same code.
import { register } from 'tsx/esm/api';
register();
await import('../control/cli/main.ts');
