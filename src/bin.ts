#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';

// Compile each function when its module loads, not at its first call: otherwise the code first run
// inside a frozen window (the snapshot step, the thaw) is compiled there — ~0.5 ms of the window in
// bench/e2e-window.ts. It costs ~50 ms at start. Set before the CLI's modules load.
setFlagsFromString('--no-lazy');
const { main } = await import('./cli/main.js');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`quiesce: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 3;
  },
);
