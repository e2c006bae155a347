#!/usr/bin/env node
'use strict';
// The CLI is compiled TypeScript: `npm ci` (prepare) or `npm run build` writes dist/.
let cli;
try {
  cli = require('../dist/src/cli/main.js');
} catch (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli/main.js')) {
    process.stderr.write('efa-emu: not built yet: run `npm ci` or `npm run build` in the package first\n');
    process.exit(1);
  }
  throw err;
}
cli.main(process.argv);
