#!/usr/bin/env node
import { main } from './cli/main.js';

// Loads commander and the version only; a subcommand loads its own modules when it runs (cli/load-command.ts).
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`quiesce: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 3;
  },
);
