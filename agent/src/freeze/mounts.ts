import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { loadAddon } from './ioctl.js';

/** One device-backed mount, as the reference's build_fs_mount_list keeps it. */
export interface FsMount {
  /** Where it is mounted (octal escapes decoded). */
  readonly dir: string;
  readonly type: string;
  /** The mount source (a device path for the mounts kept here). */
  readonly source: string;
  readonly major: number;
  readonly minor: number;
}

export const MOUNTINFO = '/proc/self/mountinfo';

/**
 * The kernel escapes space, tab, newline and backslash in mountinfo as `\ooo`;
 * decoded like the reference's decode_mntname (`\\` too, anything else kept).
 */
export function decodeMountName(name: string): string {
  if (!name.includes('\\')) return name;
  let out = '';
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    if (c !== '\\') {
      out += c;
    } else if (name[i + 1] === '\\') {
      out += '\\';
      i++;
    } else if (/^[0-3][0-7][0-7]$/.test(name.slice(i + 1, i + 4))) {
      out += String.fromCharCode(parseInt(name.slice(i + 1, i + 4), 8));
      i += 3;
    } else {
      out += c;
    }
  }
  return out;
}

/** major/minor of a block device node; undefined when it is not one (or cannot be stat'ed). */
export type BlockDeviceOf = (path: string) => { major: number; minor: number } | undefined;

export const blockDeviceOf: BlockDeviceOf = (path) => {
  try {
    const st = statSync(path, { bigint: true });
    if (!st.isBlockDevice()) return undefined;
    // glibc's gnu_dev_major/minor for a 64-bit dev_t.
    const rdev = st.rdev;
    const major = Number(((rdev & 0xfff00n) >> 8n) | ((rdev & 0xfffff00000000000n) >> 32n));
    const minor = Number((rdev & 0xffn) | ((rdev & 0xffffff00000n) >> 12n));
    return { major, minor };
  } catch {
    return undefined;
  }
};

/**
 * Parses /proc/self/mountinfo text into the mounts the reference would
 * freeze: every line with a device number, except major 0 (tmpfs, proc, …)
 * unless it is btrfs, whose device number is then taken from a stat of its
 * source. Lines keep mount order. (Scans with indexOf rather than splitting
 * every line: this runs on every freeze and every thaw.)
 */
export function parseMountinfo(text: string, deviceOf: BlockDeviceOf = blockDeviceOf): FsMount[] {
  const mounts: FsMount[] = [];
  for (let start = 0; start < text.length;) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const m = parseLine(text, start, end, deviceOf);
    if (m) mounts.push(m);
    start = end + 1;
  }
  return mounts;
}

/** The index of the next space in [from, end), or -1. */
function space(t: string, from: number, end: number): number {
  const i = t.indexOf(' ', from);
  return i >= 0 && i < end ? i : -1;
}

const DECIMAL = /^\d+$/;

// "36 35 98:0 /root /mnt/point rw,noatime master:1 - ext4 /dev/sda1 rw"
function parseLine(t: string, start: number, end: number, deviceOf: BlockDeviceOf): FsMount | undefined {
  const afterId = space(t, start, end);
  const afterParent = afterId < 0 ? -1 : space(t, afterId + 1, end);
  const afterDev = afterParent < 0 ? -1 : space(t, afterParent + 1, end);
  const afterRoot = afterDev < 0 ? -1 : space(t, afterDev + 1, end);
  // The reference needs something after the mount point.
  const afterDir = afterRoot < 0 ? -1 : space(t, afterRoot + 1, end);
  if (afterDir < 0 || afterDir === afterRoot + 1) return undefined;
  const devno = t.slice(afterParent + 1, afterDev);
  const colon = devno.indexOf(':');
  const majorText = devno.slice(0, colon);
  const minorText = devno.slice(colon + 1);
  if (colon < 0 || !DECIMAL.test(majorText) || !DECIMAL.test(minorText)) return undefined;
  const dash = t.indexOf(' - ', afterDir);
  if (dash < 0 || dash >= end) return undefined;
  // The type, the source, and something after the source.
  const afterType = space(t, dash + 3, end);
  const afterSource = afterType < 0 ? -1 : space(t, afterType + 1, end);
  if (afterSource < 0) return undefined;
  const type = t.slice(dash + 3, afterType);
  const source = decodeMountName(t.slice(afterType + 1, afterSource));
  let major = Number(majorText);
  let minor = Number(minorText);
  if (major === 0) {
    // btrfs reports major 0; its device comes from the source.
    const dev = type === 'btrfs' ? deviceOf(source) : undefined;
    if (!dev) return undefined;
    ({ major, minor } = dev);
  }
  return { dir: decodeMountName(t.slice(afterRoot + 1, afterDir)), type, source, major, minor };
}

/** Kept between reads: every freeze and thaw reads the mount table. */
let scratch = Buffer.allocUnsafe(16 * 1024);

/** Reads an open /proc file from its start to its end (one buffer kept between calls). */
function readAll(fd: number): string {
  let len = 0;
  for (;;) {
    if (len === scratch.length) {
      const bigger = Buffer.allocUnsafe(scratch.length * 2);
      scratch.copy(bigger, 0, 0, len);
      scratch = bigger;
    }
    const n = readSync(fd, scratch, len, scratch.length - len, null);
    if (n === 0) return scratch.toString('utf8', 0, len);
    len += n;
  }
}

/** Asks whether the mount table changed since `fd` was opened or last asked (the addon's poll). */
export type MountsChanged = (fd: number) => number;

/**
 * The mount list of this process's mount namespace, read again only when it
 * changed. The kernel flags every mount, unmount or remount in the namespace
 * on an open mountinfo descriptor (POLLPRI), so the list read through a
 * descriptor kept open stays valid until the flag is raised. This spares the
 * thaw a read and parse of the table, which in a TCG guest costs 1–4 ms of
 * the frozen window's tail. Without `changed` (no addon) every call reads.
 */
export class MountTable {
  private kept: { fd: number; mounts: FsMount[] } | undefined;
  /** How many times the table was read (tests). */
  reads = 0;

  constructor(
    private readonly changed: MountsChanged | undefined,
    private readonly path = MOUNTINFO,
    private readonly deviceOf: BlockDeviceOf = blockDeviceOf,
  ) {}

  read(): FsMount[] {
    if (this.kept && this.changed?.(this.kept.fd) === 0) return [...this.kept.mounts];
    this.close();
    // Opened before reading: a change between the two raises the flag, and the next call reads again.
    const fd = openSync(this.path, 'r');
    let mounts: FsMount[];
    try {
      mounts = parseMountinfo(readAll(fd), this.deviceOf);
      this.reads++;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    if (this.changed) this.kept = { fd, mounts };
    else closeSync(fd);
    return [...mounts];
  }

  close(): void {
    if (this.kept) closeSync(this.kept.fd);
    this.kept = undefined;
  }
}

let table: MountTable | undefined;

/** The current mount list of this process's mount namespace (one MountTable for the agent). */
export function readMounts(): FsMount[] {
  if (!table) {
    const loaded = loadAddon();
    table = new MountTable('addon' in loaded ? (fd) => loaded.addon.changed(fd) : undefined);
  }
  return table.read();
}
