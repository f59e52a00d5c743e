// Imports in src/ go one way (docs: architecture): cli → workflow → {guest, snapshot, process, qmp,
// libvirt} → config/log/errors; snapshot → repository (backup chains) → process; workflow and cli →
// verify (restore-point checks) → repository and guest; report reads workflow's results and nothing imports it back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** What each folder of src/ may import besides itself. Top-level files (errors, version, bin) are leaves. */
const MAY_IMPORT: Record<string, readonly string[]> = {
  cli: [
    'workflow',
    'report',
    'verify',
    'guest',
    'snapshot',
    'repository',
    'process',
    'qmp',
    'libvirt',
    'config',
    'log',
    '.',
  ],
  report: ['workflow', 'config', 'log', '.'],
  workflow: ['verify', 'guest', 'snapshot', 'repository', 'process', 'qmp', 'libvirt', 'config', 'log', '.'],
  verify: ['repository', 'guest', 'process', 'config', 'log', '.'],
  snapshot: ['repository', 'qmp', 'libvirt', 'process', 'config', 'log', '.'],
  repository: ['process', 'config', 'log', '.'],
  guest: ['libvirt', 'process', 'config', 'log', '.'],
  qmp: ['config', 'log', '.'],
  libvirt: ['config', 'log', '.'],
  process: ['log', '.'],
  config: ['.'],
  log: ['.'],
  '.': ['cli', '.'],
};

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const folderOf = (file: string): string => {
  const rel = relative(SRC, file);
  return rel.includes('/') ? rel.slice(0, rel.indexOf('/')) : '.';
};

test('imports in src/ follow the layers', () => {
  const wrong: string[] = [];
  for (const file of files(SRC)) {
    const from = folderOf(file);
    const allowed = MAY_IMPORT[from];
    assert.ok(allowed, `src/${from}/ is not in the layer table: add it`);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)) {
      const to = folderOf(resolve(dirname(file), m[1]!));
      if (to !== from && !allowed.includes(to)) wrong.push(`${relative(SRC, file)} → ${m[1]} (${from} → ${to})`);
    }
  }
  assert.deepEqual(wrong, []);
});
