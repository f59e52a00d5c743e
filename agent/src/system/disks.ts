import { readFileSync, realpathSync } from 'node:fs';
import { errorText } from '../errno.js';
import { getFsInfo } from '../freeze/fsinfo.js';
import type { JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import { dtypeHasDirBit, listDirectory } from './sysfs.js';
import { devnode, property } from './udev.js';

const SYS_BLOCK = '/sys/block';

/** GuestDiskInfo, members in the schema's order (the writer's order depends on it). */
interface DiskInfo {
  name: string;
  partition: boolean;
  dependencies: string[] | undefined;
  address: JsonOut | undefined;
  alias: string | undefined;
}

/**
 * The disk's GuestDiskAddress. The reference fills a throw-away fsinfo entry
 * for the device and keeps its first disk; so does this, through
 * guest-get-fsinfo's code. Errors on the way mean no address.
 */
function diskAddress(diskDir: string): JsonOut | undefined {
  try {
    const [major, minor] = readFileSync(`${diskDir}/dev`, 'latin1').trim().split(':').map(Number);
    if (major === undefined || minor === undefined || Number.isNaN(major) || Number.isNaN(minor)) return undefined;
    const [fs] = getFsInfo([{ dir: '', type: '', source: '', major, minor }]) as { disk: JsonOut[] }[];
    return fs?.disk[0];
  } catch {
    return undefined;
  }
}

/** realpath() contains /devices/virtual/block/; a path that does not resolve counts as virtual. */
function isVirtual(diskDir: string): boolean {
  try {
    return realpathSync(diskDir).includes('/devices/virtual/block/');
  } catch {
    return true;
  }
}

/** The device nodes of a disk's slaves/ entries, last entry first; undefined without the directory. */
function dependencies(diskDir: string): string[] | undefined {
  let names: string[];
  try {
    names = listDirectory(`${diskDir}/slaves`).map((e) => e.name);
  } catch {
    return undefined;
  }
  const out: string[] = [];
  for (const name of names) {
    const dev = devnode(`${diskDir}/slaves/${name}`);
    if (dev !== undefined) out.unshift(dev);
  }
  return out;
}

/** Subdirectories named <disk><digit>… or <disk>p<digit>…, each a partition depending on the disk. */
function partitions(diskName: string, diskDir: string, diskDev: string): DiskInfo[] {
  let entries;
  try {
    entries = listDirectory(diskDir);
  } catch {
    return [];
  }
  const out: DiskInfo[] = [];
  for (const e of entries) {
    if (!dtypeHasDirBit(e) || !e.name.startsWith(diskName)) continue;
    const rest = e.name.slice(diskName.length);
    if (!/^(p?)[0-9]/.test(rest)) continue;
    const dev = devnode(`${diskDir}/${e.name}`);
    if (dev === undefined) continue;
    out.unshift({ name: dev, partition: true, dependencies: [diskDev], address: undefined, alias: undefined });
  }
  return out;
}

/**
 * guest-get-disks: every /sys/block entry with a non-zero size and a device
 * node, each followed (in the reply, which lists everything last-found
 * first) by its partitions. Real devices get the address guest-get-fsinfo
 * would give them; device-mapper ones their udev DM_NAME as alias.
 * Not done: the NVMe SMART log the reference reads by ioctl for NVMe disks.
 */
export function getDisks(): JsonOut[] {
  let entries;
  try {
    entries = listDirectory(SYS_BLOCK);
  } catch (err) {
    throw new QgaError(`Can't open directory "${SYS_BLOCK}": ${errorText(err)}`);
  }
  let out: DiskInfo[] = [];
  for (const e of entries) {
    if (!e.isSymbolicLink()) continue;
    const diskDir = `${SYS_BLOCK}/${e.name}`;
    let size: string;
    try {
      size = readFileSync(`${diskDir}/size`, 'latin1');
    } catch {
      continue;
    }
    if (size === '0\n') continue;
    const name = devnode(diskDir);
    if (name === undefined) continue;
    const alias = property(diskDir, 'DM_NAME') || undefined;
    const disk: DiskInfo = { name, partition: false, dependencies: undefined, address: undefined, alias };
    out.unshift(disk);
    if (!isVirtual(diskDir)) disk.address = diskAddress(diskDir);
    disk.dependencies = dependencies(diskDir);
    out = [...partitions(e.name, diskDir, name), ...out];
  }
  return out as unknown as JsonOut[];
}
