import { main } from './main.js';

/**
 * Runs the CLI on argv and sets the process's exit code (never calls process.exit: a run may have a guest
 * frozen, and it must go on to thaw it). Loads commander and the version only; a subcommand loads its own
 * modules when it runs (load-command.ts).
 */
export function start(argv: readonly string[]): void {
  // A reader that stops early (`quiesce backups | head`) closes the pipe: the rest of the output is
  // dropped, without a stack trace.
  for (const stream of [process.stdout, process.stderr])
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`quiesce: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 3;
    },
  );
}
