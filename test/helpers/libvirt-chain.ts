// What the libvirt chain e2e tests share: a TCG guest under the real libvirtd with a qcow2 data disk and a
// config whose snapshot is a libvirt backup into a repository; runs of job nightly in this process; a
// known file written (writer paused) and checksummed in the guest before each run; `quiesce` from the
// source; the domain's checkpoints as virsh lists them; every point restored and compared.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveConfig } from '../../src/config/load.js';
import { libvirtPool } from '../../src/libvirt/pool.js';
import { captureLogger } from '../../src/log/logger.js';
import type { LogEvent } from '../../src/log/events.js';
import { readCatalog } from '../../src/repository/catalog.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { execute } from '../../src/workflow/executor.js';
import { newRunId, plan } from '../../src/workflow/plan.js';
import type { RunReport } from '../../src/workflow/results.js';
import { SignalGuard } from '../../src/workflow/signals.js';
import { haveQemuGa, type AgentKind } from './agents.js';
import { defineGuest, LIBVIRT_URI, libvirtUnavailable, virsh, type LibvirtGuest } from './libvirt.js';
import { imageChecksums } from './vm/disks.js';
import {
  diffChecksums,
  guestChecksums,
  guestSh,
  guestSync,
  pauseWriter,
  resumeWriter,
  type Checksums,
} from './vm/guest-ops.js';
import { GUEST_DATA_MOUNT } from './vm/qemu.js';
import { dumpe2fs, WRITER_ARG } from './vm/writer.js';

const BIN = fileURLToPath(new URL('../../src/bin.ts', import.meta.url));

/** Why the libvirt chain tests cannot run here, or undefined. */
export function chainUnavailable(): string | undefined {
  return (
    libvirtUnavailable() ??
    (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
    (spawnSync('debugfs', ['-V']).status === 0 ? undefined : 'no debugfs (e2fsprogs)')
  );
}

export const CHAIN_KINDS: readonly AgentKind[] = ['qemu-ga', 'quiesce'];

/** `quiesce …` from the source (no build needed). */
export function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', BIN, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The domain's checkpoints (names, sorted), as virsh lists them. */
export async function checkpoints(domain: string): Promise<string[]> {
  return (await virsh(['checkpoint-list', domain, '--name']))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
}

/** A restore point the test made, with the guest's checksums of /data at its point in time. */
export interface Point {
  readonly id: string;
  readonly level: string;
  readonly sums: Checksums;
  /** Taken without a freeze (failurePolicy crash-consistent): the restored journal is replayed first. */
  readonly crash?: boolean;
}

export type RunWithLog = RunReport & { readonly events: readonly LogEvent[] };

/** A guest with a qcow2 data disk under libvirtd, and job nightly backing it up into dir/repo. */
export class ChainRig {
  configObject: Record<string, unknown> = {};
  configFile = '';
  private constructor(
    readonly kind: AgentKind,
    readonly dir: string,
    public guest: LibvirtGuest,
  ) {}

  /** Boots the guest (the writer running; quiesce-agent may only freeze /data) and writes the config. */
  static async start(kind: AgentKind, prefix: string, guestOpts: { readonly kernelArgs?: string[] } = {}) {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    let guest: LibvirtGuest;
    try {
      guest = await defineGuest({
        agent: kind,
        agentArgs: kind === 'quiesce' ? ['--fsfreeze-include=/data'] : [],
        kernelArgs: [WRITER_ARG, ...(guestOpts.kernelArgs ?? [])],
        dataDiskMB: 64,
        dataFormat: 'qcow2',
      });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const rig = new ChainRig(kind, dir, guest);
    rig.configObject = {
      stateDir: join(dir, 'state'),
      guests: {
        vm: {
          connector: { type: 'libvirt', domain: guest.name, uri: LIBVIRT_URI },
          freeze: [GUEST_DATA_MOUNT],
          snapshot: { provider: 'libvirt', disks: ['vda'], repository: join(dir, 'repo') },
          timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
        },
      },
      jobs: { nightly: { guests: ['vm'], budget: '60s' } },
    };
    rig.configFile = join(dir, 'quiesce.json');
    rig.writeConfig();
    return rig;
  }

  repo(): string {
    return join(this.dir, 'repo');
  }

  /** The guest's config entry (edit it, then writeConfig() for the CLI). */
  get vm(): Record<string, unknown> & { snapshot: Record<string, unknown> } {
    return (this.configObject['guests'] as { vm: Record<string, unknown> & { snapshot: Record<string, unknown> } }).vm;
  }

  get job(): Record<string, unknown> {
    return (this.configObject['jobs'] as { nightly: Record<string, unknown> }).nightly;
  }

  writeConfig(): void {
    writeFileSync(this.configFile, JSON.stringify(this.configObject));
  }

  /** One run of job nightly in this process; `onSnapshot` runs once the snapshot step succeeded. */
  async run(onSnapshot?: (guard: SignalGuard) => void): Promise<RunWithLog> {
    const c = resolveConfig(this.configObject, this.configFile);
    const now = new Date();
    const p = plan(c, 'nightly', { runId: newRunId(now), now });
    const log = captureLogger();
    let guard: SignalGuard | undefined = undefined;
    const wrapped = Object.assign(
      (e: Parameters<typeof log>[0]) => {
        log(e);
        if (e.kind === 'step-end' && e.step === 'snapshot' && e.ok) onSnapshot?.(guard!);
      },
      { events: log.events },
    );
    guard = new SignalGuard(wrapped);
    const report = await execute(p, { log: wrapped, signals: guard });
    return Object.assign(report, { events: log.events });
  }

  /** Writer paused, a known file written and synced, the checksums read in the guest; then `action` (a run). */
  async withKnownFile<T>(n: number, action: () => Promise<T>): Promise<{ result: T; sums: Checksums }> {
    const g = this.guest;
    await pauseWriter(g);
    try {
      // Through guest-exec: guest-file-write's 1 MiB chunks are more than libvirt's agent channel takes in time here.
      await guestSh(g, 'dd if=/dev/urandom of="$1" bs=1M count=2 2>/dev/null', [`/data/known-${n}`]);
      await guestSync(g);
      const sums = await guestChecksums(g);
      return { result: await action(), sums };
    } finally {
      await resumeWriter(g);
    }
  }

  /** withKnownFile with one run. */
  async backupWithKnownFile(
    n: number,
    onSnapshot?: (guard: SignalGuard) => void,
  ): Promise<{ report: RunWithLog; sums: Checksums }> {
    const { result, sums } = await this.withKnownFile(n, () => this.run(onSnapshot));
    return { report: result, sums };
  }

  async manifest(id: string): Promise<Manifest> {
    const c = await readCatalog(this.repo(), 'vm');
    const m = [...c.points.map((p) => p.manifest), ...c.unusable.flatMap((u) => (u.manifest ? [u.manifest] : []))];
    const found = m.find((x) => x.id === id);
    assert.ok(found, `no manifest of ${id}`);
    return found;
  }

  checkpoints(): Promise<string[]> {
    return checkpoints(this.guest.name);
  }

  /**
   * `quiesce backups` lists exactly `points`, and each restores (`quiesce
   * restore`, raw) to a clean filesystem (after a journal replay, for a
   * crash-consistent one) holding exactly its files.
   */
  restoreAll(points: readonly Point[], note: (s: string) => void): void {
    const list = cli(['backups', 'vm', '--config', this.configFile, '--json']);
    assert.equal(list.status, 0, list.stderr);
    const listed = JSON.parse(list.stdout) as { id: string; level: string }[];
    assert.deepEqual(
      listed.map((p) => [p.id, p.level]),
      points.map((p) => [p.id, p.level]),
    );
    for (const p of points) {
      const to = join(this.dir, `restore-${p.id}`);
      const r = cli(['restore', 'vm', '--config', this.configFile, '--to', to, '--at', p.id, '--format', 'raw']);
      assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
      const image = join(to, 'vda.raw');
      // A frozen point is a clean filesystem as it is; a crash-consistent one is what a power cut leaves.
      if (!p.crash) {
        const fs = dumpe2fs(image);
        assert.equal(fs.state, 'clean', `${p.id}: ${fs.state}`);
        assert.equal(fs.needsRecovery, false, `${p.id}: needs_recovery`);
      }
      const restored = imageChecksums(image, 'raw', { replayJournal: p.crash === true });
      assert.deepEqual(diffChecksums(p.sums, restored, ['guest at the point', 'restored']), [], p.id);
      note(`${this.kind}: ${p.level} ${p.id}: ${restored.size} files match the guest's checksums at that point`);
      rmSync(to, { recursive: true, force: true });
    }
  }

  /** Closes the pool, deletes the checkpoints' metadata, destroys the guest, removes the folder. */
  async close(): Promise<void> {
    await libvirtPool.closeAll();
    const name = this.guest.name;
    for (const c of await checkpoints(name).catch(() => []))
      await virsh(['checkpoint-delete', name, c, '--metadata']).catch(() => undefined);
    await this.guest.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The run went through: exit 0, filesystem-consistent, thaw proven; its backup. */
export function okBackup(report: RunReport): NonNullable<RunReport['guests'][number]['backup']> {
  const vm = report.guests[0]!;
  assert.equal(report.exitCode, 0, vm.errors.map((e) => e.message).join('; '));
  assert.equal(vm.consistency, 'filesystem');
  assert.equal(vm.thawProven, true);
  return vm.backup!;
}
