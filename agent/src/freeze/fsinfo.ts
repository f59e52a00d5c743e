import { opendirSync, readdirSync, readFileSync, readlinkSync, realpathSync, statfsSync } from 'node:fs';
import { basename } from 'node:path';
import { errorText } from '../errno.js';
import type { JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import type { FsMount } from './mounts.js';

/** GuestDiskAddress as qemu-ga 7.2 fills it from sysfs (and udev's view of the device). */
export interface DiskAddress {
  'pci-controller': { domain: number; bus: number; slot: number; function: number };
  'bus-type': string;
  bus: number;
  target: number;
  unit: number;
  serial?: string;
  dev?: string;
  'ccw-address'?: { cssid: number; ssid: number; subchno: number; devno: number };
}

interface FsInfo {
  name?: string;
  mountpoint: string;
  type: string;
  'used-bytes'?: bigint;
  'total-bytes'?: bigint;
  disk: DiskAddress[];
}

/** Where sysfs and udev's database live (tests point them elsewhere). */
export interface SysPaths {
  readonly sys: string;
  readonly udevData: string;
}

const SYSTEM: SysPaths = { sys: '/sys', udevData: '/run/udev/data' };

/**
 * guest-get-fsinfo: one entry per mount of the freeze list, last mount first
 * (the reference prepends), with the disks under it found through sysfs.
 */
export function getFsInfo(mounts: readonly FsMount[], paths: SysPaths = SYSTEM): JsonOut {
  const out: JsonOut[] = [];
  for (const mount of mounts) out.unshift(fsInfo(mount, paths) as unknown as JsonOut);
  return out;
}

function fsInfo(mount: FsMount, paths: SysPaths): FsInfo {
  const fs: FsInfo = { mountpoint: mount.dir, type: mount.type, disk: [] };
  forDevice(`${paths.sys}/dev/block/${mount.major}:${mount.minor}`, fs, paths);
  try {
    const st = statfsSync(mount.dir, { bigint: true });
    const used = st.blocks - st.bfree;
    fs['used-bytes'] = used * st.bsize;
    fs['total-bytes'] = (used + st.bavail) * st.bsize;
  } catch {
    // The reference leaves both out when statvfs fails.
  }
  return fs;
}

function forDevice(devpath: string, fs: FsInfo, paths: SysPaths): void {
  let syspath: string;
  try {
    syspath = realpathSync(devpath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new QgaError(`realpath("${devpath}"): ${errorText(err)}`);
    }
    // The device may be missing in a container.
    fs.name ??= basename(devpath);
    return;
  }
  fs.name ??= basename(syspath);
  if (syspath.includes('/devices/virtual/block/')) forVirtualDevice(syspath, fs, paths);
  else forRealDevice(syspath, fs, paths);
}

/** A virtual device (loop, dm, md): the disks are its slaves. */
function forVirtualDevice(syspath: string, fs: FsInfo, paths: SysPaths): void {
  const dirpath = `${syspath}/slaves`;
  let dir;
  try {
    dir = opendirSync(dirpath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new QgaError(`opendir("${dirpath}"): ${errorText(err)}`);
  }
  try {
    // Directory order as readdir gives it (the reference does not sort).
    for (let e = dir.readSync(); e !== null; e = dir.readSync()) {
      if (e.isSymbolicLink()) forDevice(`${syspath}/slaves/${e.name}`, fs, paths);
    }
  } finally {
    dir.closeSync();
  }
}

function forRealDevice(syspath: string, fs: FsInfo, paths: SysPaths): void {
  const disk: DiskAddress = {
    'pci-controller': { domain: -1, bus: -1, slot: -1, function: -1 },
    'bus-type': 'unknown',
    bus: 0,
    target: 0,
    unit: 0,
  };
  const udev = udevInfo(syspath, paths);
  if (udev.dev !== undefined) disk.dev = udev.dev;
  if (udev.serial !== undefined) disk.serial = udev.serial;
  let hw: boolean;
  if (syspath.includes('/devices/pci')) hw = forPciDevice(syspath, disk);
  else if (syspath.includes('/devices/css')) hw = forCcwDevice(syspath, disk);
  else if (syspath.includes('/virtio')) hw = forNonPciVirtio(syspath, disk);
  else hw = false;
  if (hw || disk.dev !== undefined || disk.serial !== undefined) fs.disk.unshift(disk);
}

/** What libudev would say: the device node from the uevent file, ID_SERIAL from udev's database. */
function udevInfo(syspath: string, paths: SysPaths): { dev?: string; serial?: string } {
  const out: { dev?: string; serial?: string } = {};
  let uevent: string;
  try {
    uevent = readFileSync(`${syspath}/uevent`, 'utf8');
  } catch {
    return out;
  }
  const kv = new Map(uevent.split('\n').map((l) => l.split(/=(.*)/s, 2) as [string, string]));
  const devname = kv.get('DEVNAME');
  if (devname) out.dev = devname.startsWith('/') ? devname : `/dev/${devname}`;
  const major = kv.get('MAJOR');
  const minor = kv.get('MINOR');
  if (major !== undefined && minor !== undefined) {
    try {
      const db = readFileSync(`${paths.udevData}/b${major}:${minor}`, 'utf8');
      const serial = /^E:ID_SERIAL=(.*)$/m.exec(db)?.[1];
      if (serial) out.serial = serial;
    } catch {
      // No udev database: no serial, like libudev.
    }
  }
  return out;
}

/** sscanf-like: leading hex fields `a:b:c.d` at the start of `s`, with how many characters they took. */
function pciAt(s: string): { addr: number[]; len: number } | undefined {
  const m = /^([0-9a-fA-F]+):([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-9a-fA-F]+)/.exec(s);
  return m ? { addr: m.slice(1, 5).map((x) => parseInt(x, 16)), len: m[0].length } : undefined;
}

const PCI_DRIVERS = new Set(['ata_piix', 'sym53c8xx', 'virtio-pci', 'ahci', 'nvme']);

function driverOf(devicePath: string): string | undefined {
  try {
    return basename(readlinkSync(`${devicePath}/driver`));
  } catch {
    return undefined;
  }
}

/** target*:<a>:<b>:<c> → [a, b, c] (the reference's "/target%*u:%*u:%*u/%*u:%u:%u:%u"). */
function targetOf(syspath: string): number[] | undefined {
  const at = syspath.indexOf('/target');
  if (at < 0) return undefined;
  const m = /^\d+:\d+:\d+\/\d+:(\d+):(\d+):(\d+)/.exec(syspath.slice(at + 7));
  return m ? m.slice(1, 4).map(Number) : undefined;
}

function forPciDevice(syspath: string, disk: DiskAddress): boolean {
  const at = syspath.indexOf('/devices/pci');
  // "/devices/pci0000:00/0000:00:02.0/…": skip the root bus, read domain:bus:slot.function.
  const root = /^[0-9a-fA-F]+:[0-9a-fA-F]+\//.exec(syspath.slice(at + 12));
  const first = root ? pciAt(syspath.slice(at + 12 + root[0].length)) : undefined;
  if (!root || !first) return false;
  let pci = first.addr;
  let p = at + 12 + root[0].length + first.len;
  let driver: string | undefined;
  // Walk down through bridges until a driver the reference knows.
  for (;;) {
    driver = driverOf(syspath.slice(0, p));
    if (driver !== undefined && PCI_DRIVERS.has(driver)) break;
    const next = syspath[p] === '/' ? pciAt(syspath.slice(p + 1)) : undefined;
    if (!next) return false;
    pci = next.addr;
    p += 1 + next.len;
  }
  const tgt = targetOf(syspath);
  let hostAt = syspath.indexOf('/ata');
  const ata = hostAt >= 0;
  if (!ata) hostAt = syspath.indexOf('/host');
  let host: number | undefined;
  let hosts: number[] = [];
  if (hostAt >= 0) {
    const m = /^\d+/.exec(syspath.slice(hostAt + (ata ? 4 : 5)));
    if (m) {
      host = Number(m[0]);
      hosts = listHosts(syspath.slice(0, hostAt), ata);
    }
  }
  disk['pci-controller'] = { domain: pci[0]!, bus: pci[1]!, slot: pci[2]!, function: pci[3]! };
  switch (driver) {
    case 'ata_piix': {
      // A host per IDE bus, target*:0:<unit>:0.
      const i = host === undefined || !tgt ? -1 : hosts.indexOf(host);
      if (i < 0) return false;
      disk['bus-type'] = 'ide';
      disk.bus = i;
      disk.unit = tgt![1]!;
      return true;
    }
    case 'sym53c8xx':
      if (!tgt) return false;
      disk['bus-type'] = 'scsi';
      disk.unit = tgt[1]!;
      return true;
    case 'virtio-pci':
      if (tgt) {
        // virtio-scsi: target*:0:0:<unit>.
        disk['bus-type'] = 'scsi';
        disk.unit = tgt[2]!;
      } else {
        disk['bus-type'] = 'virtio';
      }
      return true;
    case 'ahci': {
      const i = host === undefined || !tgt ? -1 : hosts.indexOf(host);
      if (i < 0) return false;
      disk['bus-type'] = 'sata';
      disk.unit = i;
      return true;
    }
    case 'nvme':
      disk['bus-type'] = 'nvme';
      return true;
    default:
      return false;
  }
}

/** The sorted host (or ata) numbers in a directory, at most 8, as the reference's build_hosts. */
function listHosts(dir: string, ata: boolean): number[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new QgaError(`opendir("${dir}"): ${errorText(err)}`);
  }
  const re = ata ? /^ata(-?\d+)/ : /^host(-?\d+)/;
  const hosts: number[] = [];
  for (const n of names) {
    const m = re.exec(n);
    if (m) hosts.push(Number(m[1]));
    if (hosts.length >= 8) break;
  }
  return hosts.sort((a, b) => a - b);
}

/** virtio without PCI (s390x): virtio-scsi target or one virtio-blk disk. */
function forNonPciVirtio(syspath: string, disk: DiskAddress): boolean {
  if (!syspath.includes('/virtio') || !syspath.includes('/block')) return false;
  const tgt = targetOf(syspath);
  if (tgt) {
    disk['bus-type'] = 'scsi';
    disk.bus = tgt[0]!;
    disk.target = tgt[1]!;
    disk.unit = tgt[2]!;
  } else {
    disk['bus-type'] = 'virtio';
  }
  return true;
}

/** s390x channel I/O: "/devices/css<x>/<cssid>.<ssid>.<subchno>/<x>.<x>.<devno>/". */
function forCcwDevice(syspath: string, disk: DiskAddress): boolean {
  const at = syspath.indexOf('/devices/css');
  const m =
    /^[0-9a-fA-F]+\/([0-9a-fA-F]+)\.([0-9a-fA-F]+)\.([0-9a-fA-F]+)\/[0-9a-fA-F]+\.[0-9a-fA-F]+\.([0-9a-fA-F]+)\//.exec(
      syspath.slice(at + 12),
    );
  if (!m) return false;
  const [cssid, ssid, subchno, devno] = m.slice(1, 5).map((x) => parseInt(x, 16)) as [number, number, number, number];
  disk['ccw-address'] = { cssid, ssid, subchno, devno };
  if (syspath.slice(at).includes('/virtio')) forNonPciVirtio(syspath, disk);
  return true;
}
