#!/usr/bin/env node
import { main } from './cli/main.js';

// A reader that stops early (`quiesce backups | head`) closes the pipe: the rest of the output is dropped,
// without a stack trace. Never an exit here: a run may have a guest frozen, and it must go on to thaw it.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });

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
