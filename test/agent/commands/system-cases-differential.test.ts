/**
 * The system commands against qemu-ga 7.2 on inputs this machine does not
 * have: os-release files (QGA_OS_RELEASE and the default paths), $TZ values
 * and /etc/localtime layouts, host names with odd bytes, utmp records, CPU
 * and memory-block sysfs trees, /proc/stat and /proc/diskstats lines, and a
 * partitioned loop disk under device-mapper. The fake files live in a mount
 * and UTS namespace that both agents enter; nothing outside it changes
 * (the loop and dm devices excepted, which the test removes).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { isRoot } from '../../helpers/agents.js';
import { Namespace, SKIP_NO_QEMU_GA, SystemPair, tempDir, which } from './system-rig.js';

describe('guest-get-osinfo on os-release files (QGA_OS_RELEASE)', { skip: SKIP_NO_QEMU_GA }, () => {
  const tmp = tempDir('osinfo-');
  const file = join(tmp.dir, 'os-release');
  let pair: SystemPair;
  before(async () => {
    pair = await SystemPair.start({ env: { QGA_OS_RELEASE: file } });
  });
  after(async () => {
    await pair?.stop();
    tmp.remove();
  });

  const CASES: [string, string | Buffer | null][] = [
    [
      'a typical file',
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
    ],
    ['variant fields', 'ID=fedora\nVARIANT="Server Edition"\nVARIANT_ID=server\nVERSION="39 (Server Edition)"\n'],
    ['escapes inside double quotes', 'NAME="a \\"b\\" \\$c \\\\d \\`e\\` \\q \\n"\nID="x"y\n'],
    ['an unterminated quote keeps its tail', 'NAME="abc\nID="\nVERSION="é\nVERSION_ID="a\\\n'],
    ['single quotes, spaces and semicolons', "NAME='single quoted'\nID=two words\nVERSION=a;b c\nVERSION_ID=x\ty;z\n"],
    ['an empty value, a lone quote, two quotes', 'NAME=\nID="\nVERSION=""\nVERSION_ID=\'\'\n'],
    [
      'CRLF lines, comments, blank lines, indentation',
      '# comment\r\n\r\n   ID=crlf\r\n\tNAME = spaced\t \r\n  # x=y\nVERSION=last\r',
    ],
    ['the last of a repeated key wins', 'ID=first\nID=second\nNAME=n\nNAME="quoted"\n'],
    [
      'keys after another group are not os-release keys',
      'ID=before\n[other]\nNAME=hidden\n[os-release]\nVERSION=back\n',
    ],
    ['locale keys are other keys', 'NAME[de]=Deutsch\nNAME[C]=C\nNAME=plain\nID[x@y.z-w_v]=ok\n'],
    ['a space inside a key is fine', 'PRETTY NAME=x\nID=y\n'],
    ['non-ASCII UTF-8', 'NAME="Débian ✓ 𝄞"\nID=ü\n'],
    ['a NUL byte ends the file', Buffer.from('ID=before\nNAME=x\0y\nVERSION=after\n')],
    ['no newline at the end', 'ID=eof'],
    ['an empty file', ''],
    ['a line without "=" spoils the file', 'ID=x\njunk\n'],
    ['"=x" spoils the file', 'ID=x\n=value\n'],
    ['a bad key spoils the file', 'ID=x\nNA]ME=y\n'],
    ['a bad locale spoils the file', 'ID=x\nNAME[de=y\n'],
    ['a bad group name spoils the file', 'ID=x\n[a[b]\n'],
    ['a group line with text after it spoils the file', 'ID=x\n[g] x\n'],
    ['Encoding other than UTF-8 spoils the file', 'ID=x\nEncoding=ISO-8859-1\n'],
    ['Encoding=UTF-8 is fine', 'ID=x\nEncoding=utf-8\n'],
    ['invalid UTF-8 spoils the file', Buffer.from([0x49, 0x44, 0x3d, 0xff, 0x0a])],
    ['a missing file (no fallback with QGA_OS_RELEASE)', null],
  ];
  for (const [title, content] of CASES) {
    test(title, async () => {
      rmSync(file, { force: true });
      if (content !== null) writeFileSync(file, content);
      const { ours, ref } = await pair.ask({ execute: 'guest-get-osinfo' });
      assert.equal(ours, ref);
    });
  }
});

describe('guest-get-timezone with $TZ', { skip: SKIP_NO_QEMU_GA }, () => {
  const VALUES = [
    'America/New_York',
    'Australia/Lord_Howe',
    'Europe/Dublin',
    'Asia/Kathmandu',
    'right/Europe/London',
    'Factory',
    ':Europe/Paris',
    '/usr/share/zoneinfo/Asia/Tokyo',
    'EST5EDT,M3.2.0,M11.1.0',
    'AEST-10AEDT,M10.1.0,M4.1.0/3',
    '<+0545>-5:45',
    'JST-9',
    'XYZ-3ABC',
    '+05:30',
    '-03',
    'Z',
    '0530',
    'Nonsense/Zone',
    '',
  ];
  // $TZ is set once per process: a pair per value, all started at once.
  const pairs = new Map<string, SystemPair>();
  before(async () => {
    const started = await Promise.allSettled(
      VALUES.map(async (tz) => pairs.set(tz, await SystemPair.start({ env: { TZ: tz } }))),
    );
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  });
  after(async () => {
    await Promise.all([...pairs.values()].map((p) => p.stop()));
  });
  for (const tz of VALUES) {
    test(`TZ=${JSON.stringify(tz)}`, async () => {
      const { ours, ref } = await pairs.get(tz)!.ask({ execute: 'guest-get-timezone' });
      assert.equal(ours, ref);
    });
  }
});

const nsSkip = SKIP_NO_QEMU_GA || Namespace.skipReason();

/** A utmp record as glibc writes it (x86-64 layout, 384 bytes). */
function utmpRecord(r: { type: number; user: Buffer | string; host?: string; sec: number; usec?: number }): Buffer {
  const b = Buffer.alloc(384);
  b.writeInt16LE(r.type, 0);
  b.writeInt32LE(1234, 4);
  b.write('pts/0', 8, 'latin1');
  const user = Buffer.isBuffer(r.user) ? r.user : Buffer.from(r.user);
  user.copy(b, 44, 0, Math.min(user.length, 32));
  b.write(r.host ?? '', 76, 'latin1');
  b.writeInt32LE(r.sec, 340);
  b.writeInt32LE(r.usec ?? 0, 344);
  return b;
}

describe('system commands in a namespace with fake files', { skip: nsSkip }, () => {
  const tmp = tempDir('system-ns-');
  const d = (p: string): string => join(tmp.dir, p);
  let ns: Namespace;
  let pair: SystemPair;

  before(async () => {
    for (const p of ['etc-up', 'etc-work', 'run', 'cpu', 'mem']) mkdirSync(d(p));
    writeFileSync(d('stat'), 'cpu  1 2 3 4\ncpu0 1 2 3 4 5 6 7 8 9 10\n');
    writeFileSync(d('diskstats'), '   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n');
    writeFileSync(d('usr-lib-os-release'), 'ID=usrlib\nNAME="From /usr/lib"\n');
    // Enough of a CPU tree for the agents' own start-up (glibc reads cpu/online).
    writeFileSync(d('cpu/online'), '0-1\n');
    ns = await Namespace.create(`
mount -t overlay overlay -o lowerdir=/etc,upperdir=${d('etc-up')},workdir=${d('etc-work')} /etc
mount --bind ${d('run')} /run
mount --bind ${d('cpu')} /sys/devices/system/cpu
mount --bind ${d('mem')} /sys/devices/system/memory
mount --bind ${d('stat')} /proc/stat
mount --bind ${d('diskstats')} /proc/diskstats
mount --bind ${d('usr-lib-os-release')} /usr/lib/os-release`);
    pair = await SystemPair.start({ wrap: ns.wrap });
  });
  after(async () => {
    await pair?.stop();
    await ns?.close();
    tmp.remove();
  });

  async function same(execute: string): Promise<string> {
    const { ours, ref } = await pair.ask({ execute });
    assert.equal(ours, ref);
    return ours;
  }

  describe('guest-get-host-name', () => {
    const NAMES: [string, Buffer][] = [
      ['plain', Buffer.from('guest-01')],
      ['64 characters', Buffer.from('h'.repeat(64))],
      ['quotes and backslashes', Buffer.from('a"b\\c')],
      ['UTF-8', Buffer.from('héllo-✓')],
      ['invalid UTF-8', Buffer.from([0x61, 0xff, 0xfe, 0x62, 0xc3])],
      ['control characters', Buffer.from('a\x01b\x7fc')],
    ];
    for (const [title, name] of NAMES) {
      test(title, async () => {
        ns.setHostname(name, d('hostname'));
        await same('guest-get-host-name');
      });
    }
  });

  describe('guest-get-users from utmp', () => {
    const CASES: [string, Buffer | null][] = [
      ['no utmp file', null],
      ['an empty file', Buffer.alloc(0)],
      [
        'users in first-seen order with their earliest login, other record types skipped',
        Buffer.concat([
          utmpRecord({ type: 2, user: 'reboot', sec: 1_700_000_000 }),
          utmpRecord({ type: 7, user: 'alice', sec: 1_700_000_100, usec: 250_000 }),
          utmpRecord({ type: 6, user: 'LOGIN', sec: 1_700_000_050 }),
          utmpRecord({ type: 7, user: 'bob', sec: 1_700_000_200, usec: 1 }),
          utmpRecord({ type: 7, user: 'alice', sec: 1_700_000_090, usec: 999_999 }),
          utmpRecord({ type: 8, user: 'carol', sec: 1_700_000_300 }),
          utmpRecord({ type: 7, user: 'alice', sec: 1_700_000_500 }),
        ]),
      ],
      [
        'a 32-byte name runs into ut_host, odd bytes, a partial record at the end',
        Buffer.concat([
          utmpRecord({ type: 7, user: 'u'.repeat(32), host: 'host.example', sec: 1_600_000_000, usec: 123_456 }),
          utmpRecord({ type: 7, user: Buffer.from([0x72, 0xc3, 0xa9, 0xff, 0x22]), sec: 0 }),
          utmpRecord({ type: 7, user: '', sec: -5, usec: -250_000 }),
          Buffer.alloc(100, 7),
        ]),
      ],
    ];
    for (const [title, content] of CASES) {
      test(title, async () => {
        rmSync(d('run/utmp'), { force: true });
        if (content) writeFileSync(d('run/utmp'), content);
        await same('guest-get-users');
      });
    }
  });

  describe('guest-get-timezone from /etc/localtime ($TZ unset)', () => {
    const LAYOUTS: [string, string][] = [
      ['a relative symlink', 'ln -sf ../usr/share/zoneinfo/Asia/Tokyo /etc/localtime'],
      ['an absolute symlink', 'ln -sf /usr/share/zoneinfo/America/New_York /etc/localtime'],
      [
        'a copy, with /etc/timezone',
        'cp /usr/share/zoneinfo/Asia/Kolkata /etc/localtime; echo Asia/Kolkata > /etc/timezone',
      ],
      ['a copy, without /etc/timezone', 'cp /usr/share/zoneinfo/Asia/Kolkata /etc/localtime'],
      [
        'a symlink to a symlink, with /etc/timezone',
        'ln -sf /usr/share/zoneinfo/Europe/Paris /etc/lt2; ln -sf /etc/lt2 /etc/localtime; echo x > /etc/timezone',
      ],
      ['a symlink to a symlink, without /etc/timezone', 'ln -sf /usr/share/zoneinfo/posixrules /etc/localtime'],
      ['a dangling symlink', 'ln -sf /nonexistent/zone /etc/localtime'],
      ['not a TZif file', 'echo hello > /etc/localtime; echo x > /etc/timezone'],
      ['no /etc/localtime', 'true'],
    ];
    for (const [title, script] of LAYOUTS) {
      test(title, async () => {
        ns.run(`rm -f /etc/localtime /etc/timezone /etc/lt2\n${script}`);
        await same('guest-get-timezone');
      });
    }
  });

  describe('guest-get-osinfo from /etc/os-release, else /usr/lib/os-release', () => {
    const LAYOUTS: [string, string][] = [
      ['/etc/os-release', 'printf "ID=etc\\nNAME=\\"From /etc\\"\\n" > /etc/os-release'],
      ['no /etc/os-release', 'true'],
      ['an unusable /etc/os-release', 'printf "ID=etc\\njunk\\n" > /etc/os-release'],
    ];
    for (const [title, script] of LAYOUTS) {
      test(title, async () => {
        ns.run(`rm -f /etc/os-release\n${script}`);
        await same('guest-get-osinfo');
      });
    }
    test('neither file usable: only the kernel fields', async () => {
      writeFileSync(d('usr-lib-os-release'), '=\n');
      ns.run('rm -f /etc/os-release');
      const reply = await same('guest-get-osinfo');
      assert.doesNotMatch(reply, /"id"/);
    });
  });

  describe('guest-get-vcpus on a fake CPU tree', () => {
    const cpu = (p: string): string => d(`cpu/${p}`);
    before(() => {
      for (const p of ['cpu0', 'cpu1', 'cpu2', 'cpu10', 'cpufreq', 'cpuidle', 'power']) mkdirSync(cpu(p));
      writeFileSync(cpu('cpu1/online'), '1\n');
      writeFileSync(cpu('cpu2/online'), '0\n');
      writeFileSync(cpu('cpu10/online'), 'x');
      writeFileSync(cpu('possible'), '0-15\n');
    });
    test('online, offline, without an online file; other entries skipped', async () => {
      await same('guest-get-vcpus');
    });
    test('"cpu01" scans as cpu1', async () => {
      mkdirSync(cpu('cpu01'));
      await same('guest-get-vcpus');
      rmSync(cpu('cpu01'), { recursive: true });
    });
    test('an empty online file: the read error', async () => {
      mkdirSync(cpu('cpu3'));
      writeFileSync(cpu('cpu3/online'), '');
      const reply = await same('guest-get-vcpus');
      assert.match(reply, /unexpected EOF/);
      rmSync(cpu('cpu3'), { recursive: true });
    });
    test('an online attribute that is a directory: the read error', async () => {
      mkdirSync(cpu('cpu4/online'), { recursive: true });
      const reply = await same('guest-get-vcpus');
      assert.match(reply, /Is a directory/);
      rmSync(cpu('cpu4'), { recursive: true });
    });
    test('a cpu entry that is no directory: the open error', async () => {
      writeFileSync(cpu('cpu5'), '');
      const reply = await same('guest-get-vcpus');
      assert.match(reply, /Not a directory/);
      rmSync(cpu('cpu5'));
    });
  });

  describe('guest-get-memory-blocks and guest-get-memory-block-info on a fake memory tree', () => {
    const mem = (p: string): string => d(`mem/${p}`);
    // Empties the directory in place: the namespace has this very directory mounted.
    const reset = (): void => {
      for (const name of readdirSync(d('mem'))) rmSync(mem(name), { recursive: true, force: true });
    };
    test('an empty directory: zero memory blocks, no block size', async () => {
      reset();
      const reply = await same('guest-get-memory-blocks');
      assert.match(reply, /zero memory blocks/);
      await same('guest-get-memory-block-info');
    });
    test('online, offline, without state or removable, odd names', async () => {
      reset();
      for (const p of ['memory0', 'memory1', 'memory2', 'memory3', 'memory42', 'memoryX', 'power']) mkdirSync(mem(p));
      writeFileSync(mem('memory0/state'), 'online\n');
      writeFileSync(mem('memory0/removable'), '1\n');
      writeFileSync(mem('memory1/state'), 'offline\n');
      writeFileSync(mem('memory1/removable'), '0\n');
      writeFileSync(mem('memory3/state'), 'online_movable\n');
      writeFileSync(mem('memory42/state'), 'going-offline\n');
      writeFileSync(mem('memory42/removable'), '1\n');
      writeFileSync(mem('memoryX/state'), 'online\n');
      writeFileSync(mem('block_size_bytes'), '8000000\n');
      writeFileSync(mem('probe'), '');
      symlinkSync('memory0', mem('memory7'));
      await same('guest-get-memory-blocks');
      await same('guest-get-memory-block-info');
    });
    test('an empty state file ends the list with the read error', async () => {
      mkdirSync(mem('memory9'));
      writeFileSync(mem('memory9/state'), '');
      const reply = await same('guest-get-memory-blocks');
      assert.match(reply, /unexpected EOF/);
      rmSync(mem('memory9'), { recursive: true });
    });
    test('a state attribute that is a directory ends the list with the read error', async () => {
      mkdirSync(mem('memory8/state'), { recursive: true });
      const reply = await same('guest-get-memory-blocks');
      assert.match(reply, /Is a directory/);
      rmSync(mem('memory8'), { recursive: true });
    });
    for (const [title, content] of [
      ['a block size in upper case with 0x', '0X10000000\n'],
      ['a negative block size', '-8\n'],
      ['a block size that is no number', 'zz\n'],
      ['an empty block size file', ''],
    ] as const) {
      test(title, async () => {
        writeFileSync(mem('block_size_bytes'), content);
        await same('guest-get-memory-block-info');
      });
    }
  });

  describe('guest-get-cpustats on fake /proc/stat lines', () => {
    const CASES: [string, string][] = [
      [
        'every line length from 4 to 10 counters, names that are not CPUs',
        [
          'cpu  10 20 30 40 50 60 70 80 90 100',
          'cpu0 1 2 3 4',
          'cpu1 1 2 3 4 5',
          'cpu2 1 2 3 4 5 6',
          'cpu3 1 2 3 4 5 6 7',
          'cpu4 1 2 3 4 5 6 7 8',
          'cpu5 1 2 3 4 5 6 7 8 9',
          'cpu6 1 2 3 4 5 6 7 8 9 10 11 12',
          'cpux 7 7 7 7',
          'cpu-3 1 1 1 1',
          'intr 12345 0 0',
          '',
          '   ',
          'ctxt 99',
          'cpu7 18446744073709551615 18446744073709551616 -1 99999999999999999999',
          'cpu8 12x 5 5 5 5',
          'softirq 1 2 3',
        ].join('\n'),
      ],
      ['a short CPU line ends the list', 'cpu0 1 2 3 4\ncpu1 1 2 3\ncpu2 1 2 3 4\n'],
      ['no newline at the end', 'cpu0 100 200 300 400 500'],
    ];
    for (const [title, content] of CASES) {
      test(title, async () => {
        writeFileSync(d('stat'), content);
        await same('guest-get-cpustats');
      });
    }
  });

  describe('guest-get-diskstats on fake /proc/diskstats lines', () => {
    const counters = (n: number, start = 1): string => Array.from({ length: n }, (_, i) => String(start + i)).join(' ');
    const CASES: [string, string][] = [
      [
        'every format: 4 counters, 5 to 10 (empty stats), 11, 15, 17, and lines too short',
        [
          `   8       1 sda1 ${counters(4)}`,
          `   8       2 sda2 ${counters(5)}`,
          `   8       3 sda3 ${counters(10)}`,
          `   8       0 sda ${counters(11)}`,
          `   8      16 sdb ${counters(15)}`,
          ` 259       0 nvme0n1 ${counters(17)}`,
          ` 259       1 nvme0n1p1 ${counters(20)}`,
          `   8      32 sdc ${counters(3)}`,
          '   9 x md0 1 2 3 4',
          'garbage',
          '',
        ].join('\n'),
      ],
      [
        'tick fields wrap at 32 bits, the others at 64',
        `   7   0 loop0 18446744073709551615 4294967296 4294967297 4294967298 1 2 3 4294967299 4294967300 4294967301 4294967302 5 6 7 4294967303 9 4294967304\n`,
      ],
      ['negative numbers and trailing garbage', '  -1 -2 neg -3 4 5 6x 7 8 9 10 11 12 13\n'],
      ['a long device name, no newline at the end', `   1   2 ${'n'.repeat(100)} ${counters(11)}`],
    ];
    for (const [title, content] of CASES) {
      test(title, async () => {
        writeFileSync(d('diskstats'), content);
        await same('guest-get-diskstats');
      });
    }
  });
});

const diskSkip =
  SKIP_NO_QEMU_GA ||
  (!isRoot() ? 'needs root for loop and device-mapper devices' : false) ||
  (!which('losetup') ? 'needs losetup (util-linux)' : false);

/** An MBR with two Linux partitions, as sfdisk would write it (sizes in 512-byte sectors). */
function mbrImage(path: string, sectors: number, parts: readonly [start: number, size: number][]): void {
  const mbr = Buffer.alloc(512);
  for (const [i, [start, size]] of parts.entries()) {
    const at = 446 + 16 * i;
    mbr[at + 4] = 0x83;
    mbr.writeUInt32LE(start, at + 8);
    mbr.writeUInt32LE(size, at + 12);
  }
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  writeFileSync(path, mbr);
  execFileSync('truncate', ['-s', String(sectors * 512), path]);
}

describe(
  'guest-get-disks with a partitioned loop disk (under device-mapper where the kernel has it)',
  {
    skip: diskSkip,
  },
  () => {
    const tmp = tempDir('system-disks-');
    let loop = '';
    let dm = '';
    let pair: SystemPair;
    before(async () => {
      const image = join(tmp.dir, 'disk.img');
      mbrImage(image, 8192, [
        [2048, 2048],
        [4096, 4096],
      ]);
      loop = execFileSync('losetup', ['--find', '--show', '--partscan', image]).toString().trim();
      // Kernels without MBR support (or device-mapper) still give a virtual disk of non-zero size.
      if (which('dmsetup') && existsSync(`/sys/block/${basename(loop)}/${basename(loop)}p1`)) {
        const name = `quiesce-test-${process.pid}`;
        try {
          execFileSync('dmsetup', ['create', name, '--table', `0 2048 linear ${loop}p1 0`], { stdio: 'ignore' });
          dm = name;
        } catch {
          // No device-mapper in this kernel.
        }
      }
      pair = await SystemPair.start();
    });
    after(async () => {
      await pair?.stop();
      if (dm) execFileSync('dmsetup', ['remove', dm], { stdio: 'ignore' });
      if (loop) execFileSync('losetup', ['--detach', loop], { stdio: 'ignore' });
      tmp.remove();
    });

    test('the disk, its partitions (depending on it) and the dm device (depending on a partition)', async () => {
      const { ours, ref } = await pair.askStable({ execute: 'guest-get-disks' }, 5);
      assert.equal(ours, ref);
      assert.ok(ours.includes(`"name": "${loop}", "dependencies": [], "partition": false}`), ours);
      if (existsSync(`/sys/block/${basename(loop)}/${basename(loop)}p2`)) {
        assert.ok(ours.includes(`"name": "${loop}p2", "dependencies": ["${loop}"], "partition": true`), ours);
      }
      if (dm) assert.match(ours, new RegExp(`"name": "/dev/dm-\\d+", "dependencies": \\["${loop}p1"\\]`));
    });
  },
);
