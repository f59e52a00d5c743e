import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { AgentKind } from './agents.js';
import { cacheDir, ensureBootFiles, type BootFiles } from './vm/initramfs.js';
import {
  AGENT_MARKER,
  AGENT_PORT,
  guestUnavailable,
  kernelCmdline,
  makeImage,
  QEMU,
  watchConsole,
  type DiskFormat,
  type GuestOptions,
} from './vm/qemu.js';

/**
 * A real libvirtd for tests (see vm-lab.md, "The same guest under a real
 * libvirtd"): ensureLibvirtd() starts virtlogd + libvirtd when none answers
 * (there is no systemd), and defineGuest() runs the test guest as a transient
 * `<domain type='qemu'>` with direct kernel boot.
 */

export const LIBVIRT_URI = 'qemu:///system';
const VIRSH = '/usr/bin/virsh';
const LIBVIRTD = '/usr/sbin/libvirtd';
const VIRTLOGD = '/usr/sbin/virtlogd';
const QEMU_CONF = '/etc/libvirt/qemu.conf';
const CONF_MARK = '# added by quiesce test/helpers/libvirt.ts';
const DOMAIN_PREFIX = 'quiesce-vm-';

export interface LibvirtdInfo {
  /** True when this call started the daemons (they stay up for the session). */
  started: boolean;
  /** `{libvirtd, virtlogd}` pids this helper started, also in daemonsFile(). */
  pids: Record<string, number>;
}

/**
 * Where the helper records the pids of daemons it started (to stop them later: stopStartedLibvirtd()).
 * scripts/run-tests.mjs names a file of its own run in QUIESCE_TEST_DAEMONS_FILE, so that it stops only
 * the daemons its own test files started, never those of another run on the same host.
 */
export function daemonsFile(): string {
  return process.env['QUIESCE_TEST_DAEMONS_FILE'] || join(cacheDir(), 'libvirt-daemons.json');
}

/** Why libvirt tests cannot run here, or undefined. */
export function libvirtUnavailable(): string | undefined {
  const vm = guestUnavailable();
  if (vm) return vm;
  if (process.getuid?.() !== 0) return 'needs root (libvirtd, qemu:///system)';
  const missing = [
    [VIRSH, 'libvirt-clients'],
    [LIBVIRTD, 'libvirt-daemon'],
    [VIRTLOGD, 'libvirt-daemon'],
    ['/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so', 'libvirt-daemon-driver-qemu'],
  ].filter(([p]) => !existsSync(p!));
  return missing.length > 0 ? `missing ${missing.map(([p, pkg]) => `${p} (${pkg})`).join(', ')}` : undefined;
}

/** Runs virsh against qemu:///system; returns stdout, throws with stderr on failure. */
export async function virsh(args: readonly string[], timeoutMs = 60_000): Promise<string> {
  try {
    const r = await promisify(execFile)(VIRSH, ['-c', LIBVIRT_URI, ...args], {
      timeout: timeoutMs,
      env: { ...process.env, LC_ALL: 'C' },
    });
    return r.stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`virsh ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

function virshSync(args: readonly string[], timeoutMs = 10_000): { ok: boolean; out: string; err: string } {
  const r = spawnSync(VIRSH, ['-c', LIBVIRT_URI, ...args], {
    timeout: timeoutMs,
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C' },
  });
  return { ok: r.status === 0, out: r.stdout ?? '', err: r.stderr ?? '' };
}

function answers(): boolean {
  return virshSync(['version'], 15_000).ok;
}

function pidOf(file: string, name: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
    return cmd.includes(name) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Makes sure a libvirtd answers on qemu:///system. A running one (CI's,
 * someone else's) is used as it is. Otherwise it does what the packaging
 * (libvirt-daemon-system + systemd) would: directories, the libvirt-qemu
 * user, `user = "root"` / `group = "root"` in qemu.conf (once), then
 * `virtlogd -d` and `libvirtd -d`. Daemons it starts stay up for the session;
 * their pids go to daemonsFile().
 */
export async function ensureLibvirtd(timeoutMs = 60_000): Promise<LibvirtdInfo> {
  const why = libvirtUnavailable();
  if (why) throw new Error(`cannot run libvirtd: ${why}`);
  if (answers()) return { started: false, pids: {} };

  for (const d of [
    '/var/log/libvirt/qemu',
    '/var/run/libvirt',
    '/var/lib/libvirt/qemu',
    '/var/cache/libvirt/qemu',
    '/etc/libvirt',
  ])
    mkdirSync(d, { recursive: true });
  // libvirt's QEMU driver looks its build-time default user up before reading qemu.conf.
  if (spawnSync('getent', ['group', 'libvirt-qemu']).status !== 0) execFileSync('groupadd', ['-r', 'libvirt-qemu']);
  if (spawnSync('getent', ['passwd', 'libvirt-qemu']).status !== 0)
    execFileSync('useradd', [
      '-r',
      '-g',
      'libvirt-qemu',
      '-d',
      '/var/lib/libvirt',
      '-s',
      '/usr/sbin/nologin',
      'libvirt-qemu',
    ]);
  if (spawnSync('getent', ['group', 'libvirt']).status !== 0) execFileSync('groupadd', ['-r', 'libvirt']);
  // QEMU runs as root: it reads the cached initramfs and the test's temp files as they are.
  const conf = existsSync(QEMU_CONF) ? readFileSync(QEMU_CONF, 'utf8') : '';
  if (!/^\s*user\s*=/m.test(conf) && !conf.includes(CONF_MARK))
    appendFileSync(
      QEMU_CONF,
      `${conf && !conf.endsWith('\n') ? '\n' : ''}${CONF_MARK}\nuser = "root"\ngroup = "root"\n`,
    );

  const pids: Record<string, number> = {};
  if (pidOf('/var/run/virtlogd.pid', 'virtlogd') === undefined) {
    execFileSync(VIRTLOGD, ['-d']);
    pids['virtlogd'] = await waitForPid('/var/run/virtlogd.pid', 'virtlogd', 10_000);
  }
  if (pidOf('/var/run/libvirtd.pid', 'libvirtd') === undefined) {
    execFileSync(LIBVIRTD, ['-d']);
    pids['libvirtd'] = await waitForPid('/var/run/libvirtd.pid', 'libvirtd', 10_000);
  }
  writeFileSync(daemonsFile(), JSON.stringify({ ...readStarted(), ...pids }, null, 2) + '\n');
  const deadline = Date.now() + timeoutMs;
  while (!answers()) {
    if (Date.now() > deadline) {
      const log = existsSync('/var/log/libvirt/libvirtd.log')
        ? readFileSync('/var/log/libvirt/libvirtd.log', 'utf8').split('\n').slice(-15).join('\n')
        : '';
      throw new Error(`libvirtd does not answer on ${LIBVIRT_URI}\n${log}`);
    }
    await sleep(250);
  }
  return { started: true, pids };
}

async function waitForPid(file: string, name: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = pidOf(file, name);
    if (pid !== undefined) return pid;
    if (Date.now() > deadline) throw new Error(`${name} -d started but wrote no live pid to ${file}`);
    await sleep(100);
  }
}

function readStarted(): Record<string, number> {
  try {
    return JSON.parse(readFileSync(daemonsFile(), 'utf8')) as Record<string, number>;
  } catch {
    return {};
  }
}

/**
 * Stops the daemons this helper started (pids from daemonsFile(), each
 * checked against its command line first). Daemons it did not start are left
 * alone. scripts/run-tests.mjs calls it once every test file has run.
 */
export async function stopStartedLibvirtd(): Promise<void> {
  const started = readStarted();
  for (const name of ['libvirtd', 'virtlogd']) {
    const pid = started[name];
    if (pid === undefined) continue;
    const alive = (): boolean => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(name);
      } catch {
        return false;
      }
    };
    if (alive()) process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 50 && alive(); i++) await sleep(100);
    if (alive()) process.kill(pid, 'SIGKILL');
  }
  rmSync(daemonsFile(), { force: true });
}

export interface LibvirtGuestOptions extends GuestOptions {
  /** Domain name (default `quiesce-vm-<pid>-<n>`; that prefix lets orphans be found). */
  name?: string;
  /** Budget for boot + agent start (default 180 s). */
  bootTimeoutMs?: number;
  /** Wait until `virsh qemu-agent-command … guest-ping` answers (default true). */
  waitForAgent?: boolean;
  /** Virtual CPUs (`<vcpu>N</vcpu>`, default 1). */
  vcpus?: number;
  /**
   * The data disk's image format (default 'raw'); qcow2 (v3) is what libvirt
   * needs for checkpoints (their bitmaps live in the image).
   */
  dataFormat?: DiskFormat;
}

export interface LibvirtGuest {
  readonly name: string;
  readonly agent: AgentKind;
  readonly dir: string;
  readonly dataImage: string;
  readonly dataFormat: DiskFormat;
  readonly consoleLog: string;
  readonly xml: string;
  /** The agent through libvirt (for test/helpers/vm/guest-ops.ts). */
  readonly agentConnector: { readonly kind: 'libvirt'; readonly domain: string; readonly uri: string };
  readonly boot: BootFiles;
  readonly timings: { markerMs: number; agentReadyMs?: number };
  /** `virsh qemu-agent-command NAME JSON`: the parsed reply. */
  agentCommand(execute: string, args?: Record<string, unknown>, timeoutSec?: number): Promise<unknown>;
  console(): string;
  consoleOffset(): number;
  waitForConsole(re: RegExp, timeoutMs?: number, since?: number): Promise<RegExpMatchArray>;
  /** True while libvirt lists the domain as running. */
  running(): boolean;
  /** `virsh destroy` (if still there) and removes the directory. Safe to call twice. */
  destroy(): Promise<void>;
}

let counter = 0;

/**
 * Starts the test guest as a transient libvirt domain (`virsh create`) with
 * the agent channel libvirt owns, waits for the agent marker on the serial
 * console (a file) and, by default, for guest-ping through libvirt. The caller
 * must destroy() it; a failed start destroys before throwing.
 */
export async function defineGuest(opts: LibvirtGuestOptions = {}): Promise<LibvirtGuest> {
  await ensureLibvirtd();
  reapOrphanDomains();
  const agent = opts.agent ?? 'quiesce';
  const boot = ensureBootFiles();
  const name = opts.name ?? `${DOMAIN_PREFIX}${process.pid}-${++counter}`;
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-libvirt-'));
  const dataFormat = opts.dataFormat ?? 'raw';
  const dataImage = join(dir, dataFormat === 'qcow2' ? 'data.qcow2' : 'data.img');
  const consoleLog = join(dir, 'console.log');
  const xmlFile = join(dir, 'domain.xml');
  const xml = domainXml({
    name,
    memMB: opts.memMB ?? 1024,
    ...(opts.vcpus !== undefined ? { vcpus: opts.vcpus } : {}),
    kernel: boot.kernel,
    initrd: boot.initrd,
    cmdline: kernelCmdline(opts),
    dataImage,
    dataFormat,
    consoleLog,
  });
  let created = false;
  let destroyed = false;
  const running = (): boolean => {
    const r = virshSync(['domstate', name]);
    return r.ok && r.out.trim() === 'running';
  };
  const con = watchConsole(consoleLog, running);
  const agentCommand = async (execute: string, args?: Record<string, unknown>, timeoutSec = 30): Promise<unknown> => {
    const req = JSON.stringify(args === undefined ? { execute } : { execute, arguments: args });
    const out = await virsh(
      ['qemu-agent-command', name, req, '--timeout', String(timeoutSec)],
      (timeoutSec + 30) * 1000,
    );
    return JSON.parse(out) as unknown;
  };
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    try {
      if (created) destroyDomain(name);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  try {
    makeImage(dataImage, {
      mb: opts.dataDiskMB ?? 64,
      format: dataFormat,
      ext4: true,
      ...(opts.dataDir !== undefined ? { fromDir: opts.dataDir } : {}),
    });
    writeFileSync(xmlFile, xml);
    const started = Date.now();
    created = true; // from here on, destroy() must try (a half-created domain is possible)
    await virsh(['create', xmlFile]);
    const budget = opts.bootTimeoutMs ?? 180_000;
    await con.waitFor(AGENT_MARKER, budget);
    const timings: { markerMs: number; agentReadyMs?: number } = { markerMs: Date.now() - started };
    if (opts.waitForAgent ?? true) {
      // libvirt does its own guest-sync per command; retry until the agent is up.
      const deadline = started + budget;
      for (;;) {
        try {
          await agentCommand('guest-ping', undefined, 5);
          break;
        } catch (err) {
          if (Date.now() > deadline || !running()) throw err;
          await sleep(250);
        }
      }
      timings.agentReadyMs = Date.now() - started;
    }
    return {
      name,
      agent,
      dir,
      dataImage,
      dataFormat,
      consoleLog,
      xml,
      agentConnector: { kind: 'libvirt', domain: name, uri: LIBVIRT_URI },
      boot,
      timings,
      agentCommand,
      console: () => con.read(),
      consoleOffset: con.offset,
      waitForConsole: con.waitFor,
      running,
      destroy,
    };
  } catch (err) {
    await destroy().catch((e: unknown) => {
      throw new Error(`${String(err)}\n(and cleaning up failed: ${String(e)})`, { cause: err });
    });
    throw err;
  }
}

function destroyDomain(name: string): void {
  const r = virshSync(['destroy', name], 60_000);
  if (!r.ok && !/failed to get domain|not found|no domain|not running/i.test(r.err))
    throw new Error(`virsh destroy ${name}: ${r.err.trim()}`);
}

/** Destroys `quiesce-vm-<pid>-*` domains whose test process is gone. */
export function reapOrphanDomains(): void {
  const r = virshSync(['list', '--all', '--name']);
  if (!r.ok) return;
  for (const name of r.out.split('\n').map((l) => l.trim())) {
    const m = new RegExp(`^${DOMAIN_PREFIX}(\\d+)-\\d+$`).exec(name);
    if (!m || existsSync(`/proc/${m[1]}`)) continue;
    destroyDomain(name);
    virshSync(['undefine', name]); // only if someone made it persistent
  }
}

function esc(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

export function domainXml(d: {
  name: string;
  memMB: number;
  /** Virtual CPUs (default 1). */
  vcpus?: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  dataImage: string;
  /** Default raw. */
  dataFormat?: DiskFormat;
  consoleLog: string;
}): string {
  return `<domain type='qemu'>
  <name>${esc(d.name)}</name>
  <memory unit='MiB'>${d.memMB}</memory>
  <vcpu>${d.vcpus ?? 1}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${esc(d.kernel)}</kernel>
    <initrd>${esc(d.initrd)}</initrd>
    <cmdline>${esc(d.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>${QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${d.dataFormat ?? 'raw'}'/>
      <source file='${esc(d.dataImage)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='${AGENT_PORT}'/>
    </channel>
    <serial type='file'>
      <source path='${esc(d.consoleLog)}'/>
      <target port='0'/>
    </serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}
