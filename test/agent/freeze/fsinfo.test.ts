// guest-get-fsinfo's sysfs walk against a fake sysfs tree (the differential test compares real mounts with qemu-ga).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { getFsInfo } from '../../../agent/src/freeze/fsinfo.js';
import type { FsMount } from '../../../agent/src/freeze/mounts.js';

let root: string;

/** A device directory with a uevent file. */
function device(path: string, major: number, minor: number, devname: string): void {
  mkdirSync(join(root, path), { recursive: true });
  writeFileSync(join(root, path, 'uevent'), `MAJOR=${major}\nMINOR=${minor}\nDEVNAME=${devname}\nDEVTYPE=disk\n`);
  mkdirSync(join(root, 'dev/block'), { recursive: true });
  symlinkSync(relative(join(root, 'dev/block'), join(root, path)), join(root, 'dev/block', `${major}:${minor}`));
}

function driver(pciPath: string, name: string): void {
  mkdirSync(join(root, 'bus/pci/drivers', name), { recursive: true });
  mkdirSync(join(root, pciPath), { recursive: true });
  symlinkSync(relative(join(root, pciPath), join(root, 'bus/pci/drivers', name)), join(root, pciPath, 'driver'));
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'quiesce-sysfs-'));
  mkdirSync(join(root, 'udev'));
  // virtio-blk with a serial in udev's database
  driver('devices/pci0000:00/0000:00:02.0', 'virtio-pci');
  device('devices/pci0000:00/0000:00:02.0/virtio1/block/vda', 254, 0, 'vda');
  device('devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1', 254, 1, 'vda1');
  writeFileSync(join(root, 'udev/b254:0'), 'S:disk/by-id/virtio-abc\nE:ID_SERIAL=abc-123\nE:ID_BUS=virtio\n');
  // virtio-scsi, lun 3
  driver('devices/pci0000:00/0000:00:05.0', 'virtio-pci');
  device('devices/pci0000:00/0000:00:05.0/virtio2/host2/target2:0:1/2:0:1:3/block/sda', 8, 0, 'sda');
  // ahci, third port
  driver('devices/pci0000:00/0000:00:1f.2', 'ahci');
  for (const a of ['ata1', 'ata2', 'ata3'])
    mkdirSync(join(root, 'devices/pci0000:00/0000:00:1f.2', a), { recursive: true });
  device('devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdb', 8, 16, 'sdb');
  // nvme behind a PCIe bridge whose driver the reference does not know
  driver('devices/pci0000:00/0000:00:1c.0', 'pcieport');
  driver('devices/pci0000:00/0000:00:1c.0/0000:01:00.0', 'nvme');
  device('devices/pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1', 259, 0, 'nvme0n1');
  // device-mapper over a partition of vda
  device('devices/virtual/block/dm-0', 253, 0, 'dm-0');
  mkdirSync(join(root, 'devices/virtual/block/dm-0/slaves'));
  symlinkSync(
    relative(
      join(root, 'devices/virtual/block/dm-0/slaves'),
      join(root, 'devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1'),
    ),
    join(root, 'devices/virtual/block/dm-0/slaves/vda1'),
  );
  // a loop device: virtual, no slaves
  device('devices/virtual/block/loop4', 7, 4, 'loop4');
  mkdirSync(join(root, 'devices/virtual/block/loop4/slaves'));
  // something not on PCI
  device('devices/platform/soc/block/mmcblk0', 179, 0, 'mmcblk0');
});
after(() => rmSync(root, { recursive: true, force: true }));

const mount = (dir: string, major: number, minor: number): FsMount => ({
  dir,
  type: 'ext4',
  source: '/dev/x',
  major,
  minor,
});

function info(major: number, minor: number): Record<string, unknown> {
  const [one] = getFsInfo([mount(root, major, minor)], { sys: root, udevData: join(root, 'udev') }) as Record<
    string,
    unknown
  >[];
  return one!;
}

const pci = (domain: number, bus: number, slot: number, fn: number) => ({ domain, bus, slot, function: fn });

describe('guest-get-fsinfo sysfs walk', () => {
  test('virtio-blk: virtio bus, PCI address, device node and serial', () => {
    const fs = info(254, 0);
    assert.equal(fs['name'], 'vda');
    assert.deepEqual(fs['disk'], [
      {
        'pci-controller': pci(0, 0, 2, 0),
        'bus-type': 'virtio',
        bus: 0,
        target: 0,
        unit: 0,
        dev: '/dev/vda',
        serial: 'abc-123',
      },
    ]);
  });

  test('virtio-scsi: scsi bus, the LUN as unit', () => {
    assert.deepEqual(info(8, 0)['disk'], [
      { 'pci-controller': pci(0, 0, 5, 0), 'bus-type': 'scsi', bus: 0, target: 0, unit: 3, dev: '/dev/sda' },
    ]);
  });

  test('ahci: sata, the port index among the ata hosts as unit', () => {
    assert.deepEqual(info(8, 16)['disk'], [
      { 'pci-controller': pci(0, 0, 0x1f, 2), 'bus-type': 'sata', bus: 0, target: 0, unit: 2, dev: '/dev/sdb' },
    ]);
  });

  test('nvme behind a bridge: the address of the function with the known driver', () => {
    assert.deepEqual(info(259, 0)['disk'], [
      { 'pci-controller': pci(0, 1, 0, 0), 'bus-type': 'nvme', bus: 0, target: 0, unit: 0, dev: '/dev/nvme0n1' },
    ]);
  });

  test("device-mapper: its own name, its slaves' disks", () => {
    const fs = info(253, 0);
    assert.equal(fs['name'], 'dm-0');
    assert.deepEqual(fs['disk'], [
      { 'pci-controller': pci(0, 0, 2, 0), 'bus-type': 'virtio', bus: 0, target: 0, unit: 0, dev: '/dev/vda1' },
    ]);
  });

  test('a loop device: no disks', () => {
    const fs = info(7, 4);
    assert.equal(fs['name'], 'loop4');
    assert.deepEqual(fs['disk'], []);
  });

  test('a device off PCI: unknown bus, invalid PCI address, still its device node', () => {
    assert.deepEqual(info(179, 0)['disk'], [
      { 'pci-controller': pci(-1, -1, -1, -1), 'bus-type': 'unknown', bus: 0, target: 0, unit: 0, dev: '/dev/mmcblk0' },
    ]);
  });

  test('a device missing from sysfs: named major:minor, no disks', () => {
    const fs = info(42, 7);
    assert.equal(fs['name'], '42:7');
    assert.deepEqual(fs['disk'], []);
  });

  test('sizes from statfs, mountpoint and type as given, last mount listed first', () => {
    const list = getFsInfo([mount(root, 7, 4), mount(dirname(root), 254, 0)], {
      sys: root,
      udevData: join(root, 'udev'),
    }) as Record<string, unknown>[];
    assert.deepEqual(
      list.map((f) => f['mountpoint']),
      [dirname(root), root],
    );
    const fs = list[1]!;
    assert.equal(fs['type'], 'ext4');
    assert.equal(typeof fs['used-bytes'], 'bigint');
    assert.ok((fs['total-bytes'] as bigint) >= (fs['used-bytes'] as bigint));
    const gone = getFsInfo([mount(join(root, 'no-such-dir'), 7, 4)], { sys: root, udevData: root }) as Record<
      string,
      unknown
    >[];
    assert.equal(gone[0]!['total-bytes'], undefined);
  });
});
