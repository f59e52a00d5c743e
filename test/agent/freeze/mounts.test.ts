import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  blockDeviceOf,
  decodeMountName,
  parseMountinfo,
  readMounts,
  readProcFile,
} from '../../../agent/src/freeze/mounts.js';

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

  test('reads a /proc file whole, larger ones too (its buffer grows)', () => {
    assert.equal(readProcFile('/proc/self/mountinfo'), readFileSync('/proc/self/mountinfo', 'utf8'));
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-procfile-'));
    try {
      const big = 'é'.repeat(50_000) + '\n';
      writeFileSync(join(dir, 'big'), big);
      assert.equal(readProcFile(join(dir, 'big')), big);
      assert.equal(readProcFile('/proc/self/mountinfo'), readFileSync('/proc/self/mountinfo', 'utf8'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

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
