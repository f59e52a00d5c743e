import { execFile, execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { AgentKind } from '../agents.js';
import { Wire } from '../wire.js';
import { ensureBootFiles, vmUnavailable, type BootFiles } from './initramfs.js';

export const QEMU = '/usr/bin/qemu-system-x86_64';
/** The agent's virtio-serial port name, as libvirt and qemu-ga use it. */
export const AGENT_PORT = 'org.qemu.guest_agent.0';
/** The data disk's QMP node names and device id (`-blockdev … -device virtio-blk-pci`). */
export const DATA_FILE_NODE = 'file0';
export const DATA_NODE = 'data0';
export const DATA_DEVICE = 'vda';
/** Where the guest mounts the data disk (ext4 on /dev/vda). */
export const GUEST_DATA_MOUNT = '/data';
/** The console line init prints each time it (re)starts the agent. */
export const AGENT_MARKER = /QUIESCE-VM: agent started kind=(\S+) n=(\d+) pid=(\d+)/;
const FATAL = /QUIESCE-VM: FATAL: .*/;
const DIR_PREFIX = 'quiesce-vm-';

export interface GuestOptions {
  /** Which agent the guest runs (default 'quiesce'). */
  agent?: AgentKind;
  /**
   * Extra agent arguments, appended after `-m virtio-serial -p PORT -t /run/<agent>`;
   * one word each, no whitespace or quotes (e.g. `--fsfreeze-include=/data`).
   */
  agentArgs?: readonly string[];
  /** Size of the ext4 data disk (default 64 MB). */
  dataDiskMB?: number;
  /** Fill the new ext4 data disk from this host directory (`mkfs.ext4 -d`). */
  dataDir?: string;
  /** Guest memory (default 1024 MB; node + the unpacked initramfs need most of it). */
  memMB?: number;
  /** Seconds init waits before restarting an agent that exited (default 1). */
  restartDelaySec?: number;
  /** Extra words for the kernel command line. */
  kernelArgs?: readonly string[];
}

/** Image formats the helpers make disks in. */
export type DiskFormat = 'raw' | 'qcow2';

/** A disk besides the data disk: boot-time (BootOptions.extraDisks) or hot-added (addDisk in disks.ts). */
export interface ExtraDiskSpec {
  mb: number;
  format: DiskFormat;
  /** Put an empty ext4 on it (default false: all zeros; the guest does not mount it either way). */
  ext4?: boolean;
}

/** A virtio-blk disk of a guest: its QMP node names, device id and image. */
export interface GuestDisk {
  /** The format node (`data<i>`): what block jobs, bitmaps and snapshots name. */
  readonly node: string;
  /** The protocol node below it (`file<i>`). */
  readonly fileNode: string;
  /** The virtio-blk-pci device id (`vd<letter>`), also the guest's /dev name when it sees it. */
  readonly device: string;
  readonly image: string;
  readonly format: DiskFormat;
}

export interface BootOptions extends GuestOptions {
  /**
   * Format of the data disk's image (default 'raw'). qcow2 (v3, compat 1.1) is the
   * same ext4 converted with `qemu-img convert`, opened with `-blockdev driver=qcow2`:
   * what persistent dirty bitmaps need.
   */
  dataFormat?: DiskFormat;
  /** More disks from the start: vdb, vdc, … (node names data1/file1, data2/file2, …). */
  extraDisks?: readonly ExtraDiskSpec[];
  /** Extra QEMU arguments (more disks, devices, …). */
  extraQemuArgs?: readonly string[];
  /** Budget for boot + agent start (default 180 s: TCG on a busy machine is slow). */
  bootTimeoutMs?: number;
  /**
   * After the marker, also wait until the agent answers a guest-sync-delimited
   * over qga.sock (default true), so the first request of a test is not lost in
   * the guest's start-up.
   */
  waitForAgent?: boolean;
}

export interface BootTimings {
  /** Hashing the initramfs inputs, plus building it when they changed. */
  initrdMs: number;
  initrdBuilt: boolean;
  /** QEMU started → first agent marker on the console. */
  markerMs: number;
  /** QEMU started → the agent answered guest-sync-delimited (when waited for). */
  agentReadyMs?: number;
  /** The guest's own uptime (s) when init started the agent, from the marker line. */
  guestUptimeAtAgentS?: number;
}

export interface Guest {
  readonly agent: AgentKind;
  /** The guest's temporary directory (removed by stop()). */
  readonly dir: string;
  /** The agent chardev (unix socket, QEMU listens, one client at a time); speak the agent protocol on it (Wire). */
  readonly qgaSocket: string;
  /** QMP (unix socket, QEMU listens, one client at a time); see Qmp.open(). */
  readonly qmpSocket: string;
  /** A second QMP monitor, for a test to act (addDisk, queries) while the code under test holds the first. */
  readonly qmpSocket2: string;
  /** The ext4 image behind /dev/vda (node DATA_NODE, device DATA_DEVICE), in dataFormat. */
  readonly dataImage: string;
  /** The data image's format ('raw' unless booted with dataFormat: 'qcow2'). */
  readonly dataFormat: DiskFormat;
  /** Disks given in BootOptions.extraDisks, in order (vdb, vdc, …); hot-added ones are not listed. */
  readonly extraDisks: readonly GuestDisk[];
  /** The guest's serial console (ttyS0). */
  readonly consoleLog: string;
  readonly pid: number;
  readonly boot: BootFiles;
  readonly timings: BootTimings;
  /** The whole console so far. */
  console(): string;
  /** Current console length, to wait for lines printed after this point. */
  consoleOffset(): number;
  /**
   * Waits until the console (from byte `since` on) matches `re`; fails early if
   * init reports FATAL or QEMU exits.
   */
  waitForConsole(re: RegExp, timeoutMs?: number, since?: number): Promise<RegExpMatchArray>;
  /** True while the QEMU process exists. */
  running(): boolean;
  /** Waits for QEMU to exit by itself (guest-shutdown, poweroff); true if it did. */
  waitForExit(timeoutMs?: number): Promise<boolean>;
  /** Kills QEMU (SIGTERM, then SIGKILL) and removes the directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** Guests of this process that are not stopped yet (killed on exit as a last resort). */
const live = new Set<{ pid?: number; dir: string }>();
let exitHookInstalled = false;

/** Why guests cannot run here (missing packages), or undefined. */
export function guestUnavailable(): string | undefined {
  return vmUnavailable() ?? (existsSync(QEMU) ? undefined : `no ${QEMU} (qemu-system-x86)`);
}

/** The kernel command line for a guest (shared with the libvirt helper). */
export function kernelCmdline(opts: GuestOptions): string {
  const words = ['console=ttyS0', 'quiet', 'panic=-1', `quiesce.agent=${opts.agent ?? 'quiesce'}`];
  for (const a of opts.agentArgs ?? []) {
    if (!a || /[\s"'\\]/.test(a)) throw new Error(`agent argument ${JSON.stringify(a)}: no whitespace or quotes`);
    words.push(`quiesce.arg=${a}`);
  }
  if (opts.restartDelaySec !== undefined) words.push(`quiesce.restart_delay=${opts.restartDelaySec}`);
  words.push(...(opts.kernelArgs ?? []));
  return words.join(' ');
}

/** Creates a raw image with an ext4 filesystem (optionally filled from a directory). */
export function makeDataImage(path: string, sizeMB = 64, fromDir?: string): void {
  execFileSync('truncate', ['-s', `${sizeMB}M`, path]);
  execFileSync('mkfs.ext4', ['-F', '-q', '-L', 'quiesce-data', ...(fromDir ? ['-d', fromDir] : []), path], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/**
 * Creates a disk image in `format`: with ext4 (made raw, then converted to
 * qcow2 v3 when asked), or empty (a sparse raw file, or `qemu-img create`).
 */
export function makeImage(
  path: string,
  opts: { mb: number; format: DiskFormat; ext4?: boolean; fromDir?: string },
): void {
  if (opts.format === 'raw') {
    if (opts.ext4 || opts.fromDir) makeDataImage(path, opts.mb, opts.fromDir);
    else execFileSync('truncate', ['-s', `${opts.mb}M`, path]);
    return;
  }
  if (opts.format !== 'qcow2') throw new Error(`unknown disk format ${String(opts.format)}`);
  if (opts.ext4 || opts.fromDir) {
    const raw = `${path}.raw.tmp`;
    try {
      makeDataImage(raw, opts.mb, opts.fromDir);
      execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', raw, path], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    } finally {
      rmSync(raw, { force: true });
    }
  } else {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=1.1', path, `${opts.mb}M`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  }
}

/** Node names and device id of the guest's disk number `index` (0: the data disk vda). */
export function diskNames(index: number): { node: string; fileNode: string; device: string } {
  if (!Number.isInteger(index) || index < 0 || index >= 26) throw new Error(`disk index ${index}: 0..25`);
  return { node: `data${index}`, fileNode: `file${index}`, device: `vd${String.fromCharCode(97 + index)}` };
}

/** `-blockdev … -blockdev … -device virtio-blk-pci` for one disk. */
export function diskArgs(d: Pick<GuestDisk, 'node' | 'fileNode' | 'device' | 'image' | 'format'>): string[] {
  return [
    '-blockdev', `driver=file,filename=${d.image},node-name=${d.fileNode}`,
    '-blockdev', `driver=${d.format},file=${d.fileNode},node-name=${d.node}`,
    '-device', `virtio-blk-pci,drive=${d.node},id=${d.device}`,
  ]; // prettier-ignore
}

/**
 * Boots a guest under QEMU (TCG) with the chosen agent on virtio-serial and an
 * ext4 data disk, waits for the agent, and returns a handle. The caller must
 * call stop() (in an `after` hook); a failed boot cleans up before throwing.
 */
export async function bootGuest(opts: BootOptions = {}): Promise<Guest> {
  reapOrphans();
  const agent = opts.agent ?? 'quiesce';
  const boot = ensureBootFiles();
  const dir = mkdtempSync(join(tmpdir(), DIR_PREFIX));
  const entry: { pid?: number; dir: string } = { dir };
  live.add(entry);
  installExitHook();
  writeFileSync(join(dir, 'owner'), `${process.pid}\n`);
  const qgaSocket = join(dir, 'qga.sock');
  const qmpSocket = join(dir, 'qmp.sock');
  const qmpSocket2 = join(dir, 'qmp2.sock');
  const dataFormat: DiskFormat = opts.dataFormat ?? 'raw';
  const dataImage = join(dir, dataFormat === 'qcow2' ? 'data.qcow2' : 'data.img');
  const extraDisks: GuestDisk[] = (opts.extraDisks ?? []).map((d, i) => {
    const names = diskNames(i + 1);
    return {
      ...names,
      image: join(dir, `disk-${names.device}.${d.format === 'qcow2' ? 'qcow2' : 'img'}`),
      format: d.format,
    };
  });
  const consoleLog = join(dir, 'console.log');
  const pidFile = join(dir, 'qemu.pid');
  let stopped = false;

  const running = (): boolean => entry.pid !== undefined && isQemuOf(entry.pid, dir);

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      if (entry.pid !== undefined) await killQemu(entry.pid, dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      live.delete(entry);
    }
  };

  const con = watchConsole(consoleLog, running);
  const readConsole = con.read;
  const waitForConsole = con.waitFor;

  try {
    makeImage(dataImage, {
      mb: opts.dataDiskMB ?? 64,
      format: dataFormat,
      ext4: true,
      ...(opts.dataDir ? { fromDir: opts.dataDir } : {}),
    });
    (opts.extraDisks ?? []).forEach((d, i) => makeImage(extraDisks[i]!.image, d));
    const args = [
      '-accel', 'tcg',
      '-m', String(opts.memMB ?? 1024),
      '-nographic', '-nodefaults',
      '-serial', `file:${consoleLog}`,
      '-kernel', boot.kernel,
      '-initrd', boot.initrd,
      '-append', kernelCmdline(opts),
      '-no-reboot',
      '-device', 'virtio-serial-pci',
      '-chardev', `socket,path=${qgaSocket},server=on,wait=off,id=qga0`,
      '-device', `virtserialport,chardev=qga0,name=${AGENT_PORT}`,
      ...diskArgs({ node: DATA_NODE, fileNode: DATA_FILE_NODE, device: DATA_DEVICE, image: dataImage, format: dataFormat }),
      ...extraDisks.flatMap((d) => diskArgs(d)),
      '-qmp', `unix:${qmpSocket},server=on,wait=off`,
      '-qmp', `unix:${qmpSocket2},server=on,wait=off`,
      '-pidfile', pidFile,
      '-daemonize',
      ...(opts.extraQemuArgs ?? []),
    ]; // prettier-ignore
    const started = Date.now();
    try {
      await promisify(execFile)(QEMU, args, { cwd: dir, timeout: 60_000 });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`QEMU did not start: ${e.stderr?.trim() || e.message}`);
    } finally {
      // -daemonize returns once the pidfile is written; record the pid before anything else can fail.
      if (existsSync(pidFile)) entry.pid = Number(readFileSync(pidFile, 'utf8').trim());
    }
    if (entry.pid === undefined || !Number.isInteger(entry.pid)) throw new Error('QEMU wrote no pid file');

    const budget = opts.bootTimeoutMs ?? 180_000;
    const marker = await waitForConsole(new RegExp(`${AGENT_MARKER.source} up=(\\S+)`), budget);
    const timings: BootTimings = {
      initrdMs: boot.ms,
      initrdBuilt: boot.built,
      markerMs: Date.now() - started,
      guestUptimeAtAgentS: Number(marker[4]),
    };
    if (opts.waitForAgent ?? true) {
      await waitForAgentSync(qgaSocket, Math.max(5000, budget - (Date.now() - started)), () => {
        if (!running()) throw new Error(`QEMU exited while waiting for the agent\n${tail(readConsole())}`);
        const fatal = FATAL.exec(readConsole());
        if (fatal) throw new Error(`guest init failed: ${fatal[0]}`);
      });
      timings.agentReadyMs = Date.now() - started;
    }
    return {
      agent,
      dir,
      qgaSocket,
      qmpSocket,
      qmpSocket2,
      dataImage,
      dataFormat,
      extraDisks,
      consoleLog,
      pid: entry.pid,
      boot,
      timings,
      console: () => readConsole(),
      consoleOffset: con.offset,
      waitForConsole,
      running,
      waitForExit: async (timeoutMs = 30_000) => {
        const deadline = Date.now() + timeoutMs;
        while (running()) {
          if (Date.now() > deadline) return false;
          await sleep(100);
        }
        return true;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Waits until the agent behind `socket` answers 0xFF + guest-sync-delimited.
 * Bytes sent before the guest opens its port wait in QEMU's chardev, so one
 * request is enough; the connection is closed only after the reply, leaving
 * nothing in flight for the next client.
 */
export async function waitForAgentSync(socket: string, timeoutMs: number, check?: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const id = 0x5e000000 + Math.floor(Math.random() * 0xffffff);
  let wire: Wire | undefined;
  try {
    while (!wire) {
      try {
        wire = await Wire.open(socket);
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
    wire.send(
      Buffer.concat([Buffer.of(0xff), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}`)]),
    );
    for (;;) {
      try {
        await wire.readUntil(Buffer.from(`{"return": ${id}}\n`), 1000);
        return;
      } catch (err) {
        check?.();
        if (Date.now() > deadline || /closed/.test(String(err))) throw err;
      }
    }
  } finally {
    wire?.close();
  }
}

export interface ConsoleWatcher {
  /** The console from byte `since` on. */
  read(since?: number): string;
  offset(): number;
  /** Waits for `re`; fails early on init's FATAL line or when the VM is gone. */
  waitFor(re: RegExp, timeoutMs?: number, since?: number): Promise<RegExpMatchArray>;
}

/** Follows a guest's console file (shared with the libvirt helper). */
export function watchConsole(path: string, running: () => boolean): ConsoleWatcher {
  const read = (since = 0): string => {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return '';
    }
    try {
      const chunks: Buffer[] = [];
      const b = Buffer.alloc(65536);
      for (let pos = since; ;) {
        const n = readSync(fd, b, 0, b.length, pos);
        if (n <= 0) break;
        chunks.push(Buffer.from(b.subarray(0, n)));
        pos += n;
      }
      return Buffer.concat(chunks).toString('latin1');
    } finally {
      closeSync(fd);
    }
  };
  const waitFor = async (re: RegExp, timeoutMs = 60_000, since = 0): Promise<RegExpMatchArray> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = read(since);
      const m = re.exec(text);
      if (m) return m;
      const fatal = FATAL.exec(text);
      if (fatal) throw new Error(`guest init failed: ${fatal[0]}\n${tail(text)}`);
      if (!running()) throw new Error(`the VM exited while waiting for ${re}\n${tail(text)}`);
      if (Date.now() > deadline)
        throw new Error(`timeout (${timeoutMs} ms) waiting for ${re} on the console\n${tail(text)}`);
      await sleep(100);
    }
  };
  return { read, offset: () => Buffer.byteLength(read(), 'latin1'), waitFor };
}

export function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** True if `pid` is a QEMU whose command line names `dir` (guards against pid reuse). */
function isQemuOf(pid: number, dir: string): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return cmd.includes('qemu-system') && cmd.includes(dir) && !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

async function killQemu(pid: number, dir: string): Promise<void> {
  if (!isQemuOf(pid, dir)) return;
  signal(pid, 'SIGTERM');
  for (let i = 0; i < 50 && isQemuOf(pid, dir); i++) await sleep(100);
  if (isQemuOf(pid, dir)) signal(pid, 'SIGKILL');
  for (let i = 0; i < 100 && isQemuOf(pid, dir); i++) await sleep(100);
  if (isQemuOf(pid, dir)) throw new Error(`QEMU ${pid} survived SIGKILL`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort for a test process that ends without stop(): kill our guests synchronously.
  process.once('exit', () => {
    for (const g of live) {
      if (g.pid !== undefined && isQemuOf(g.pid, g.dir)) signal(g.pid, 'SIGKILL');
      rmSync(g.dir, { recursive: true, force: true });
    }
  });
}

/**
 * Removes guests left behind by test processes that died without cleaning up
 * (the directory records its owner's pid): kills their QEMU, by the pid in
 * its pid file and only if that process names the directory.
 */
export function reapOrphans(): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = join(tmpdir(), name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(dir, 'owner'), 'utf8').trim());
    } catch {
      continue; // being set up right now, or not ours
    }
    if (!Number.isInteger(owner) || owner <= 0 || existsSync(`/proc/${owner}`)) continue;
    try {
      const pid = Number(readFileSync(join(dir, 'qemu.pid'), 'utf8').trim());
      if (Number.isInteger(pid) && isQemuOf(pid, dir)) signal(pid, 'SIGKILL');
    } catch {
      // no QEMU was started
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
