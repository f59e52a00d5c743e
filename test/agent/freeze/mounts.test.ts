import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { loadAddon } from '../../../agent/src/freeze/ioctl.js';
import {
  blockDeviceOf,
  decodeMountName,
  MountTable,
  parseMountinfo,
  readMounts,
} from '../../../agent/src/freeze/mounts.js';
import { createLoopMount, destroyLoopMount, loopMountSkipReason } from '../../helpers/loop-mounts.js';

const SAMPLE = [
  '22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
  '23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw',
  '24 22 0:22 / /tmp rw shared:3 - tmpfs tmpfs rw,size=100k',
  '30 22 7:0 / /mnt/with\\040space rw - ext4 /dev/loop0 rw',
  '31 22 0:45 / /mnt/btrfs rw shared:9 - btrfs /dev/loop1 rw,space_cache',
  '32 22 0:46 / /mnt/btrfs-gone rw - btrfs /dev/loop9 rw',
  '33 22 7:2 /sub /mnt/bind rw master:4 shared:5 - xfs /dev/loop2 rw',
  '34 22 7:3 / /mnt/back\\134slash rw - ext4 /dev/loop3 rw',
  'garbage line',
  '35 22 7:4 / /mnt/no-dash rw',
  '36 22 7:5 / /mnt/no-super-options rw - ext4 /dev/loop5',
  '',
].join('\n');

const fakeDevices = (path: string) => (path === '/dev/loop1' ? { major: 7, minor: 1 } : undefined);

describe('mount table', () => {
  test('keeps device-backed mounts in mount order and skips major 0 except btrfs with a block-device source', () => {
    const mounts = parseMountinfo(SAMPLE, fakeDevices);
    assert.deepEqual(
      mounts.map((m) => [m.dir, m.type, m.source, `${m.major}:${m.minor}`]),
      [
        ['/', 'ext4', '/dev/vda1', '253:1'],
        ['/mnt/with space', 'ext4', '/dev/loop0', '7:0'],
        ['/mnt/btrfs', 'btrfs', '/dev/loop1', '7:1'],
        ['/mnt/bind', 'xfs', '/dev/loop2', '7:2'],
        ['/mnt/back\\slash', 'ext4', '/dev/loop3', '7:3'],
      ],
    );
  });

  test('decodes octal escapes and a doubled backslash, keeps anything else', () => {
    assert.equal(decodeMountName('/a\\040b\\011c\\012d'), '/a b\tc\nd');
    assert.equal(decodeMountName('/a\\\\b'), '/a\\b');
    assert.equal(decodeMountName('/a\\9b\\47'), '/a\\9b\\47');
    assert.equal(decodeMountName('/plain'), '/plain');
  });

  test("reads this machine's mount table: / is there, no proc/sysfs/tmpfs", () => {
    const mounts = readMounts();
    assert.ok(
      mounts.some((m) => m.dir === '/'),
      JSON.stringify(mounts),
    );
    for (const m of mounts)
      assert.ok(!['proc', 'sysfs', 'tmpfs', 'devpts', 'cgroup', 'cgroup2'].includes(m.type), m.type);
  });

  test('reads the table whole, a large one too (its buffer grows)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-mountinfo-'));
    try {
      // 600 device-backed lines: well past the 16 KiB buffer it starts with.
      const big = Array.from({ length: 600 }, (_, i) => `${100 + i} 22 7:${i} / /mnt/d${i} rw - ext4 /dev/loop${i} rw`);
      writeFileSync(join(dir, 'mountinfo'), `${big.join('\n')}\n`);
      const table = new MountTable(undefined, join(dir, 'mountinfo'));
      const mounts = table.read();
      assert.equal(mounts.length, 600);
      assert.deepEqual(mounts, parseMountinfo(readFileSync(join(dir, 'mountinfo'), 'utf8')));
      assert.deepEqual(new MountTable(undefined).read(), parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without the addon every read reads the file', () => {
    const table = new MountTable(undefined);
    table.read();
    table.read();
    assert.equal(table.reads, 2);
  });

  test(
    'with the addon the table is read again only after a mount or an unmount (the kernel flags it)',
    { skip: loopMountSkipReason() },
    () => {
      const loaded = loadAddon();
      assert.ok('addon' in loaded, 'reason' in loaded ? loaded.reason : '');
      const table = new MountTable((fd) => loaded.addon.changed(fd));
      try {
        const before = table.read();
        assert.deepEqual(table.read(), before);
        assert.equal(table.reads, 1, 'unchanged: kept');
        const m = createLoopMount('ext4');
        try {
          const withIt = table.read();
          assert.equal(table.reads, 2, 'the mount raised the flag');
          assert.ok(
            withIt.some((x) => x.dir === m.mnt),
            `${m.mnt} in ${JSON.stringify(withIt.map((x) => x.dir))}`,
          );
          assert.deepEqual(withIt, parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')));
          table.read();
          assert.equal(table.reads, 2);
        } finally {
          destroyLoopMount(m);
        }
        const after = table.read();
        assert.equal(table.reads, 3, 'the unmount raised it again');
        assert.ok(!after.some((x) => x.dir === m.mnt));
        // A caller changing the list it got does not change the kept one.
        after.length = 0;
        assert.notEqual(table.read().length, 0);
      } finally {
        table.close();
      }
    },
  );

  test('a block device node gives the major:minor sysfs knows it by', () => {
    const entry = readdirSync('/sys/dev/block')[0];
    assert.ok(entry, 'some block device exists');
    const devname = /^DEVNAME=(.*)$/m.exec(readFileSync(`/sys/dev/block/${entry}/uevent`, 'utf8'))?.[1];
    assert.ok(devname, `DEVNAME of ${entry}`);
    const dev = blockDeviceOf(`/dev/${devname}`);
    assert.deepEqual(dev && `${dev.major}:${dev.minor}`, entry, basename(readlinkSync(`/sys/dev/block/${entry}`)));
    assert.equal(blockDeviceOf('/etc/hostname'), undefined);
    assert.equal(blockDeviceOf('/no/such/device'), undefined);
  });
});
