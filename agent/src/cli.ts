import { main } from './main.js';

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`quiesce-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
