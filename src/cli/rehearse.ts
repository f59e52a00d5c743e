import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../log/logger.js';

/**
 * What the build runs once before it saves the dependencies' code caches (scripts/save-code-cache.mjs):
 * a run's config read as a run reads it (cosmiconfig loads `yamlConfig` and a JSON file; zod validates
 * both) and its log written as a run writes it (winston, JSON lines and readable text). The caches then
 * hold the code of those paths, which a run would otherwise compile as it first ran them. Nothing it
 * writes reaches stderr; it fails if either config does not validate.
 */
export async function rehearse(yamlConfig: string): Promise<void> {
  const { loadConfig } = await import('../config/load.js');
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-rehearsal-'));
  try {
    await loadConfig({ file: yamlConfig });
    const json = join(dir, 'quiesce.config.json');
    writeFileSync(
      json,
      JSON.stringify({
        stateDir: join(dir, 'state'),
        guests: {
          vm: {
            connector: { type: 'libvirt', domain: 'vm', uri: 'qemu:///system' },
            freeze: ['/data'],
            snapshot: {
              provider: 'libvirt',
              mode: 'snapshot',
              disks: ['vda'],
              target: join(dir, '{disk}-{runId}.qcow2'),
            },
          },
          web: {
            connector: { type: 'socket', path: join(dir, 'qga.sock') },
            freeze: 'all',
            snapshot: { provider: 'command', argv: ['true'] },
          },
        },
        jobs: { nightly: { guests: ['vm', 'web'], budget: '10s' } },
      }),
    );
    await loadConfig({ file: json });
    await logQuietly();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A run's first log events, in both formats, with stderr's writes dropped meanwhile. */
async function logQuietly(): Promise<void> {
  const write = process.stderr.write;
  process.stderr.write = () => true;
  try {
    for (const json of [true, false]) {
      const log = createLogger({ json });
      await log.ready();
      log({ kind: 'run-start', job: 'nightly', runId: 'rehearsal', units: 1, guests: 1 });
      log({ kind: 'step-end', guest: 'vm', step: 'connect', durationMs: 1, ok: true });
      log({ kind: 'warning', message: 'rehearsal', guest: 'vm' });
    }
    // winston hands a line to its transport a tick later.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.stderr.write = write;
  }
}
