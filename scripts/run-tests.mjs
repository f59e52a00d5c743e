// Runs every test/**/*.test.ts with node:test (through tsx), one file at a time (scripts/test-files.mjs).
// Arguments narrow the run to paths containing them.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTestFiles, runTestFiles } from './test-files.mjs';

const filters = process.argv.slice(2);
const files = findTestFiles('test').filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files match');
  process.exit(1);
}
// The libvirt tests start libvirtd/virtlogd when none answers and share them across files. They record
// the pids of the daemons they start in a file of this run only (test/helpers/libvirt.ts daemonsFile()),
// so that the run stops what it started and nothing else: not a daemon that was already running, nor
// one that another run on this host started.
const runDir = mkdtempSync(join(tmpdir(), 'quiesce-tests-'));
const env = { ...process.env, QUIESCE_TEST_DAEMONS_FILE: join(runDir, 'libvirt-daemons.json') };
let status = 1;
try {
  status = await runTestFiles(files, { env });
  const stop = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      "const m = await import('./test/helpers/libvirt.ts'); await m.stopStartedLibvirtd();",
    ],
    { stdio: 'inherit', env },
  );
  if (stop.status !== 0) console.error('could not stop the libvirt daemons the tests started');
} finally {
  rmSync(runDir, { recursive: true, force: true });
}
process.exit(status);
