// Runs every test/**/*.test.ts with node:test (through tsx). Arguments narrow the run to paths containing them.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? find(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [join(dir, e.name)] : [],
  );
}

const filters = process.argv.slice(2);
const files = find('test')
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no test files match');
  process.exit(1);
}
// --test-force-exit: a file whose tests have all ended exits even if a leaked handle (a socket nobody
// closed) would keep it alive; otherwise one such leak hangs the whole run until CI's limit.
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-force-exit', ...files],
  {
    stdio: 'inherit',
  },
);
// The libvirt tests start libvirtd/virtlogd when none answers and share them across files; stop the
// ones they started (a daemon that was already running is left alone).
const stop = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--input-type=module',
    '-e',
    "const m = await import('./test/helpers/libvirt.ts'); await m.stopStartedLibvirtd();",
  ],
  { stdio: 'inherit' },
);
if (stop.status !== 0) console.error('could not stop the libvirt daemons the tests started');
process.exit(r.status ?? 1);
