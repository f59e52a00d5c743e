/**
 * guest-set-time, guest-set-vcpus, guest-set-memory-blocks,
 * guest-set-user-password and the ssh key commands on both agents, side by
 * side in one private mount namespace (admin-rig.ts): stubs over hwclock and
 * chpasswd, fake users with homes on a tmpfs, fake CPU and memory sysfs trees,
 * no CAP_SYS_TIME. Each case compares the replies, what the stubs recorded
 * and the files each agent left behind (contents, modes, owners).
 *
 * guest-set-time never gets a time the reference would accept: only times
 * whose year is outside 1970..2069 in every time zone (the check precedes
 * settimeofday() in qga/commands-posix.c), and the form without a time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentKind } from '../../helpers/agents.js';
import { ADMIN_COMMANDS, AdminRig, adminSkipReason, snapshot, type Entry, type Outcome } from './admin-rig.js';

const SKIP = adminSkipReason();
const KINDS: AgentKind[] = ['quiesce', 'qemu-ga'];

interface Observed extends Outcome {
  readonly trees: Entry[][];
}

/**
 * The same request to each agent, each time after `prepare()` has put the
 * fake files back, and what each left in `trees` (paths inside the namespace).
 */
async function both(
  rig: AdminRig,
  request: object | string,
  prepare: () => void = () => undefined,
  trees: readonly string[] = [],
): Promise<Record<AgentKind, Observed>> {
  const out: Partial<Record<AgentKind, Observed>> = {};
  for (const kind of KINDS) {
    prepare();
    const o = await rig.send(kind, request);
    out[kind] = { ...o, trees: trees.map((t) => snapshot(rig.host(t))) };
  }
  return out as Record<AgentKind, Observed>;
}

/** Replies with the random names of GLib's temporary files made comparable. */
const normalize = (o: Observed): Observed => ({
  ...o,
  replies: o.replies.map((r) => r.replace(/(authorized_keys\.)[A-Za-z0-9]{6}/g, '$1XXXXXX')),
});

async function same(
  rig: AdminRig,
  request: object | string,
  prepare?: () => void,
  trees?: readonly string[],
): Promise<Observed> {
  const r = await both(rig, request, prepare, trees);
  // An unreachable namespace would give two empty snapshots that agree.
  for (const t of r.quiesce.trees) assert.ok(t.length > 0, 'a tree snapshot is empty');
  assert.deepEqual(normalize(r.quiesce), normalize(r['qemu-ga']));
  return r.quiesce;
}

const err = (desc: string): string => `{"error": {"class": "GenericError", "desc": ${JSON.stringify(desc)}}}`;

describe('guest-set-time (never a time the reference would set)', { skip: SKIP }, () => {
  let rig: AdminRig;
  before(async () => {
    rig = await AdminRig.start();
  });
  after(async () => {
    await rig?.stop();
  });

  const hwclock = (flag: string) => ({ argv: ['/sbin/hwclock', flag], session: 'own', io: 'nnn' });

  test('without a time: hwclock -s, forked into its own session with stdio on /dev/null', async () => {
    rig.configure({});
    const o = await same(rig, { execute: 'guest-set-time' });
    assert.deepEqual(o.replies, ['{"return": {}}']);
    assert.deepEqual(o.calls, [hwclock('-s')]);
  });
  test('without a time, hwclock exits 1', async () => {
    rig.configure({ HWCLOCK_EXIT: 1 });
    const o = await same(rig, { execute: 'guest-set-time', arguments: {} });
    assert.deepEqual(o.replies, [err('hwclock failed to set hardware clock to system time')]);
  });
  test('without a time, hwclock is killed', async () => {
    rig.configure({ HWCLOCK_SIGNAL: 'KILL' });
    const o = await same(rig, { execute: 'guest-set-time' });
    assert.deepEqual(o.replies, [err('child process has terminated abnormally')]);
  });
  for (const [title, time] of [
    ['1938', '-1000000000000000000'],
    ['2071', '3200000000000000000'],
    ['INT64_MIN (1677)', '-9223372036854775808'],
    ['INT64_MAX (2262)', '9223372036854775807'],
  ] as const) {
    test(`a time in ${title} is invalid before anything runs`, async () => {
      rig.configure({});
      const o = await same(rig, `{"execute": "guest-set-time", "arguments": {"time": ${time}}}`);
      assert.deepEqual(o.replies, [err('Invalid time')]);
      assert.deepEqual(o.calls, []);
    });
  }
  for (const [title, args] of [
    ['a string', '{"time": "now"}'],
    ['a double', '{"time": 1.5e18}'],
    ['above INT64_MAX', '{"time": 9223372036854775808}'],
    ['null', '{"time": null}'],
    ['an unexpected member', '{"time": -1000000000000000000, "utc": true}'],
  ] as const) {
    test(`argument errors: ${title}`, async () => {
      rig.configure({});
      const o = await same(rig, `{"execute": "guest-set-time", "arguments": ${args}}`);
      assert.match(o.replies[0]!, /"error"/);
      assert.deepEqual(o.calls, []);
    });
  }
  test('ours only: a valid time (now) fails as settimeofday() does without CAP_SYS_TIME', async () => {
    rig.configure({});
    const time = BigInt(Date.now()) * 1_000_000n;
    const o = await rig.send('quiesce', `{"execute": "guest-set-time", "arguments": {"time": ${time}}}`);
    assert.deepEqual(o.replies, [err('Failed to set time to guest: Operation not permitted')]);
    assert.deepEqual(o.calls, []);
  });
});

describe('guest-set-time without an executable /sbin/hwclock', { skip: SKIP }, () => {
  let rig: AdminRig;
  before(async () => {
    rig = await AdminRig.start({ hwclock: 'not-executable' });
  });
  after(async () => {
    await rig?.stop();
  });
  for (const [title, request] of [
    ['without a time', '{"execute": "guest-set-time"}'],
    [
      'the check comes before the time is checked',
      '{"execute": "guest-set-time", "arguments": {"time": -1000000000000000000}}',
    ],
  ] as const) {
    test(title, async () => {
      const o = await same(rig, request);
      assert.deepEqual(o.replies, [err('this feature or command is not currently supported')]);
      assert.deepEqual(o.calls, []);
    });
  }
});

describe('guest-set-vcpus on a fake CPU tree', { skip: SKIP }, () => {
  let rig: AdminRig;
  const CPU = '/sys/devices/system/cpu';
  before(async () => {
    rig = await AdminRig.start();
  });
  after(async () => {
    await rig?.stop();
  });

  /** cpu0 without online, cpu1 on, cpu2 off, cpu3's online a directory, cpu4's empty, cpu5 a file, cpu6 "x"; cpu7 read-only. */
  const prepare = (): void => {
    const root = rig.host(CPU);
    for (const name of readdirSync(root))
      if (name !== 'cpu7' && name !== 'online') rmSync(join(root, name), { recursive: true });
    for (const d of ['cpu0', 'cpu1', 'cpu2', 'cpu3/online', 'cpu4', 'cpu6', 'cpufreq'])
      mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, 'cpu1/online'), '1\n');
    writeFileSync(join(root, 'cpu2/online'), '0\n');
    writeFileSync(join(root, 'cpu4/online'), '');
    writeFileSync(join(root, 'cpu5'), '');
    writeFileSync(join(root, 'cpu6/online'), 'x');
  };
  const set = (vcpus: unknown) => ({ execute: 'guest-set-vcpus', arguments: { vcpus } });
  const cpu = (id: number, online: boolean, extra: object = {}) => ({ 'logical-id': id, online, ...extra });

  const CASES: [string, object | string, RegExp?][] = [
    ['an empty list: 0', set([]), /"return": 0/],
    ['cpu0 has no online file: onlining it is a success', set([cpu(0, true)]), /"return": 1/],
    ['cpu0 has no online file: offlining it fails', set([cpu(0, false)]), /can't be offlined/],
    ['offline cpu1, online cpu2: both files written', set([cpu(1, false), cpu(2, true)]), /"return": 2/],
    ['cpu1 already online: nothing written', set([cpu(1, true, { 'can-offline': false })]), /"return": 1/],
    ['"x" counts as online', set([cpu(6, false)]), /"return": 1/],
    ['an unknown CPU', set([cpu(9, true)]), /No such file or directory/],
    ['a negative id', set([cpu(-1, true)]), /cpu-1/],
    [
      'after one success, a failure is dropped and the count returned',
      set([cpu(1, false), cpu(9, true), cpu(2, true)]),
      /"return": 1/,
    ],
    ['an online attribute that is a directory', set([cpu(3, true)]), /Is a directory/],
    ['an empty online attribute', set([cpu(4, true)]), /unexpected EOF/],
    ['a cpu entry that is a file', set([cpu(5, true)]), /Not a directory/],
    ['a read-only online attribute', set([cpu(7, false)]), /Read-only file system/],
    [
      'a read-only attribute is opened for writing even when no write is needed',
      set([cpu(7, true)]),
      /Read-only file system/,
    ],
    ['vcpus missing', { execute: 'guest-set-vcpus', arguments: {} }, /'vcpus' is missing/],
    ['vcpus not a list', set({ 'logical-id': 1, online: true }), /expected: array/],
    ['an element not an object', set([cpu(1, true), 5]), /'vcpus\[1\]', expected: object/],
    ['logical-id missing', set([{ online: true }]), /'vcpus\[0\].logical-id' is missing/],
    ['online missing', set([{ 'logical-id': 1 }]), /'vcpus\[0\].online' is missing/],
    ['logical-id a string', set([{ 'logical-id': '1', online: true }]), /expected: integer/],
    ['online a number', set([{ 'logical-id': 1, online: 1 }]), /expected: boolean/],
    ['can-offline a string', set([{ 'logical-id': 1, online: true, 'can-offline': 'no' }]), /expected: boolean/],
    [
      'an unexpected member (nothing done, even for the valid first element)',
      set([cpu(1, false), cpu(2, true, { x: 1 })]),
      /'vcpus\[1\].x' is unexpected/,
    ],
    ['two unexpected members: the same one is named', set([cpu(1, false, { zz: 1, aa: 2, mm: 3 })]), /is unexpected/],
    ['an unexpected argument', { execute: 'guest-set-vcpus', arguments: { vcpus: [], x: 1 } }, /'x' is unexpected/],
  ];
  for (const [title, request, expect] of CASES) {
    test(title, async () => {
      const o = await same(rig, request, prepare, [CPU]);
      if (expect) assert.match(o.replies.join('\n'), expect);
    });
  }
  test('what the files hold after offlining cpu1 and onlining cpu2', async () => {
    const o = await same(rig, set([cpu(1, false), cpu(2, true)]), prepare, [CPU]);
    const content = (p: string) => o.trees[0]!.find((e) => e.path === p)?.content;
    assert.equal(content('cpu1/online'), '0\n');
    assert.equal(content('cpu2/online'), '1\n');
  });
});

describe('guest-set-memory-blocks on a fake memory tree', { skip: SKIP }, () => {
  let rig: AdminRig;
  const MEM = '/sys/devices/system/memory';
  before(async () => {
    rig = await AdminRig.start();
  });
  after(async () => {
    await rig?.stop();
  });

  /** 0 online, 1 offline, 2 no state, 3 online_movable, 4 empty state, 5 state a directory, 6 a file; 7 read-only, offline. */
  const prepare = (): void => {
    const root = rig.host(MEM);
    for (const name of readdirSync(root)) if (name !== 'memory7') rmSync(join(root, name), { recursive: true });
    for (const d of ['memory0', 'memory1', 'memory2', 'memory3', 'memory4', 'memory5/state']) {
      mkdirSync(join(root, d), { recursive: true });
    }
    writeFileSync(join(root, 'memory0/state'), 'online\n');
    writeFileSync(join(root, 'memory1/state'), 'offline\n');
    writeFileSync(join(root, 'memory3/state'), 'online_movable\n');
    writeFileSync(join(root, 'memory4/state'), '');
    writeFileSync(join(root, 'memory6'), '');
    writeFileSync(join(root, 'block_size_bytes'), '8000000\n');
  };
  const set = (blocks: unknown) => ({ execute: 'guest-set-memory-blocks', arguments: { 'mem-blks': blocks } });
  const blk = (i: number | string, online: boolean) => ({ 'phys-index': i, online });

  const CASES: [string, object | string, RegExp?][] = [
    ['an empty list', set([]), /"return": \[\]/],
    ['already online: success, nothing written', set([blk(0, true)]), /"success"/],
    ['offline an online block ("offline" written over "online\\n")', set([blk(0, false)])],
    ['online an offline block (no truncation: "onlinee\\n")', set([blk(1, true)])],
    ['no state attribute, online asked: success with error-code 2', set([blk(2, true)]), /"error-code": 2/],
    ['no state attribute, offline asked: not supported', set([blk(2, false)]), /operation-not-supported/],
    ['online_movable counts as online', set([blk(3, false)])],
    ['an empty state: failed, error-code 0', set([blk(4, true)]), /"error-code": 0/],
    ['a state that is a directory: failed, EISDIR', set([blk(5, true)]), /"error-code": 21/],
    ['a block entry that is a file: failed, ENOTDIR', set([blk(6, true)]), /"error-code": 20/],
    ['an unknown block: not found', set([blk(99, true)]), /not-found/],
    ['a read-only state: failed, EROFS', set([blk(7, true)]), /"error-code": 30/],
    ['read-only but already offline: success', set([blk(7, false)])],
    ['several blocks, one response each in order', set([blk(1, true), blk(99, false), blk(0, true), blk(2, false)])],
    ['a negative index wraps to uint64', set([blk(-1, true)]), /18446744073709551615/],
    [
      'UINT64_MAX',
      '{"execute": "guest-set-memory-blocks", "arguments": {"mem-blks": [{"phys-index": 18446744073709551615, "online": true}]}}',
    ],
    ['phys-index a string', set([blk('0', true)]), /expects uint64/],
    ['phys-index a double', set([blk(1.5, true)]), /expects uint64/],
    [
      'phys-index above UINT64_MAX',
      '{"execute": "guest-set-memory-blocks", "arguments": {"mem-blks": [{"phys-index": 18446744073709551616, "online": true}]}}',
      /expects uint64/,
    ],
    ['online missing', set([{ 'phys-index': 0 }]), /'mem-blks\[0\].online' is missing/],
    ['mem-blks missing', { execute: 'guest-set-memory-blocks' }, /'mem-blks' is missing/],
    ['an element that is a list', set([[]]), /expected: object/],
    [
      'an unexpected member',
      set([{ 'phys-index': 0, online: false, 'can-offline': true, extra: null }]),
      /is unexpected/,
    ],
  ];
  for (const [title, request, expect] of CASES) {
    test(title, async () => {
      const o = await same(rig, request, prepare, [MEM]);
      if (expect) assert.match(o.replies.join('\n'), expect);
    });
  }
  test('what the files hold after onlining block 1 and offlining block 0', async () => {
    const o = await same(rig, set([blk(1, true), blk(0, false)]), prepare, [MEM]);
    const content = (p: string) => o.trees[0]!.find((e) => e.path === p)?.content;
    assert.equal(content('memory1/state'), 'onlinee\n');
    assert.equal(content('memory0/state'), 'offline');
  });
});

describe('guest-set-user-password with a chpasswd stub', { skip: SKIP }, () => {
  let rig: AdminRig;
  before(async () => {
    rig = await AdminRig.start();
  });
  after(async () => {
    await rig?.stop();
  });
  const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
  const set = (username: string, password: string, crypted: boolean) => ({
    execute: 'guest-set-user-password',
    arguments: { username, password, crypted },
  });
  const chpasswd = (stdin: string, ...args: string[]) => ({
    argv: ['$DIR/bin/chpasswd', ...args],
    session: 'own',
    io: '-nn',
    stdin,
  });

  const CASES: [string, object | string, Parameters<AdminRig['configure']>[0], RegExp | string | null, object[]?][] = [
    [
      'a plain password: chpasswd reads "user:password\\n"',
      set('alice', b64('s3cret pw'), false),
      {},
      '{"return": {}}',
      [chpasswd('alice:s3cret pw\n')],
    ],
    [
      'crypted: chpasswd -e',
      set('alice', b64('$6$salt$hash'), true),
      {},
      '{"return": {}}',
      [chpasswd('alice:$6$salt$hash\n', '-e')],
    ],
    ['an empty password', set('alice', '', false), {}, '{"return": {}}', [chpasswd('alice:\n')]],
    [
      'a NUL ends the password (the newline after it is never seen)',
      set('alice', b64(Buffer.from('ab\0\ncd')), false),
      {},
      '{"return": {}}',
    ],
    ['unpadded base64', set('alice', 'cHc', false), {}, '{"return": {}}'],
    ['base64 with a line break', set('alice', 'cGFz\nc3dk', false), {}, '{"return": {}}'],
    ['invalid base64', set('alice', 'cH!c', false), {}, /Base64 data contains invalid characters/, []],
    ['a newline in the password', set('alice', b64('a\nb'), false), {}, /forbidden characters in raw password/, []],
    ['a colon in the user name', set('al:ice', b64('x'), false), {}, /forbidden characters in username/, []],
    ['a newline in the user name', set('al\nice', b64('x'), false), {}, /forbidden characters in username/, []],
    ['the password is checked before the user name', set('a:b', b64('a\nb'), false), {}, /raw password/, []],
    ["a user that does not exist is chpasswd's business", set('nobody-here', b64('x'), false), {}, '{"return": {}}'],
    ['a non-ASCII user name goes out as UTF-8', set('jöhn', b64('pässword'), false), {}, '{"return": {}}'],
    [
      'chpasswd exits 1',
      set('alice', b64('x'), false),
      { CHPASSWD_EXIT: 1 },
      /child process has failed to set user password/,
    ],
    ['chpasswd is killed', set('alice', b64('x'), true), { CHPASSWD_SIGNAL: 'KILL' }, /terminated abnormally/],
    [
      'no chpasswd in PATH',
      set('alice', b64('x'), false),
      { chpasswd: 'absent' },
      /cannot find 'passwd' program in PATH/,
      [],
    ],
    [
      'a chpasswd without x bits is not found',
      set('alice', b64('x'), false),
      { chpasswd: 'not-executable' },
      /cannot find 'passwd' program/,
      [],
    ],
    [
      'crypted missing',
      { execute: 'guest-set-user-password', arguments: { username: 'alice', password: '' } },
      {},
      /'crypted' is missing/,
    ],
    ['crypted a string', set('alice', '', 'yes' as unknown as boolean), {}, /expected: boolean/],
    [
      'username missing',
      { execute: 'guest-set-user-password', arguments: { password: '', crypted: false } },
      {},
      /'username' is missing/,
    ],
  ];
  for (const [title, request, config, expect, calls] of CASES) {
    test(title, async () => {
      rig.configure(config);
      const o = await same(rig, request);
      if (typeof expect === 'string') assert.deepEqual(o.replies, [expect]);
      else if (expect) assert.match(o.replies.join('\n'), expect);
      if (calls) assert.deepEqual(o.calls, calls);
    });
  }
});

describe('the ssh key commands on fake homes', { skip: SKIP }, () => {
  let rig: AdminRig;
  let homes: string;
  let ro: string;
  before(async () => {
    rig = await AdminRig.start();
    homes = join(rig.dir, 'homes');
    ro = join(rig.dir, 'ro');
  });
  after(async () => {
    await rig?.stop();
  });

  type Layout = Record<string, string | { dir: true; mode?: number; owner?: [number, number] } | { link: string }>;
  /** Empties the homes tmpfs and lays out `files` (relative to it; a string is a file's contents). */
  const layout =
    (files: Layout = {}) =>
    (): void => {
      const root = rig.host(homes);
      for (const name of readdirSync(root)) rmSync(join(root, name), { recursive: true, force: true });
      for (const home of ['root', 'alice', 'bob', 'n1000']) mkdirSync(join(root, home));
      for (const [rel, what] of Object.entries(files)) {
        const p = join(root, rel);
        mkdirSync(join(p, '..'), { recursive: true });
        if (typeof what === 'string') writeFileSync(p, Buffer.from(what, 'latin1'));
        else if ('link' in what) symlinkSync(what.link, p);
        else {
          mkdirSync(p, { recursive: true });
          if (what.mode !== undefined) chmodSync(p, what.mode);
          if (what.owner) chownSync(p, ...what.owner);
        }
      }
    };
  const get = (username: string) => ({ execute: 'guest-ssh-get-authorized-keys', arguments: { username } });
  const add = (username: string, keys: unknown, reset?: boolean) => ({
    execute: 'guest-ssh-add-authorized-keys',
    arguments: reset === undefined ? { username, keys } : { username, keys, reset },
  });
  const remove = (username: string, keys: unknown) => ({
    execute: 'guest-ssh-remove-authorized-keys',
    arguments: { username, keys },
  });
  const K1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 one@host';
  const K2 = 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQKey2 two@host';
  const K3 = 'ecdsa-sha2-nistp256 AAAAE2VjZHNhKey3 three';
  const AK = 'alice/.ssh/authorized_keys';

  const CASES: [string, object | string, Layout, RegExp?][] = [
    // guest-ssh-get-authorized-keys
    ['get: an unknown user', get('nobody-here'), {}, /failed to lookup user 'nobody-here': Success/],
    ['get: the empty user name', get(''), {}, /failed to lookup user ''/],
    ['get: no authorized_keys', get('alice'), {}, /Failed to open file/],
    ['get: an empty file', get('alice'), { [AK]: '' }, /"keys": \[\]/],
    [
      'get: last line first, comments, blank lines and white space dropped',
      get('alice'),
      { [AK]: `${K1}\n# comment\n\n  ${K2}\t\r\n   \n\t# indented comment\n${K3}` },
    ],
    ['get: a NUL ends the file', get('alice'), { [AK]: `${K1}\n${K2}\0\n${K3}\n` }],
    [
      'get: invalid UTF-8 and control characters',
      get('alice'),
      { [AK]: 'ssh-rsa \xff\xfe bad\nssh-rsa \x01\x7f ctl\nssh-rsa caf\xc3\xa9\n' },
    ],
    ['get: authorized_keys is a directory', get('alice'), { [AK]: { dir: true } }, /Error reading file/],
    [
      'get: authorized_keys is a symlink to a file',
      get('alice'),
      { 'alice/keys': `${K2}\n`, [AK]: { link: '../keys' } },
    ],
    ['get: a home with a trailing slash', get('bob'), { 'bob/.ssh/authorized_keys': `${K1}\n` }],
    ['get: a user named with digits only', get('1000'), { 'n1000/.ssh/authorized_keys': `${K3}\n` }],
    ['get: a home that does not exist', get('nohome'), {}, /No such file or directory/],
    // guest-ssh-add-authorized-keys
    ['add: creates ~/.ssh (0700) and the file (0600), owned by the user', add('alice', [K1, K2]), {}],
    [
      'add: to a file ending in a newline (an empty line is kept before the new key)',
      add('alice', [K3]),
      { [AK]: `${K1}\n${K2}\n` },
    ],
    ['add: to a file without a final newline', add('alice', [K3, K1]), { [AK]: `${K1}\n${K2}` }],
    ['add: keys already there or given twice are added once', add('alice', [K2, K3, K3, K1]), { [AK]: `${K1}\n${K2}` }],
    ['add: lines are compared as they are (white space counts)', add('alice', [K1]), { [AK]: ` ${K1}\n` }],
    ['add: an empty key is a line like any other', add('alice', ['', K1, '']), { [AK]: `${K2}` }],
    ['add: reset writes exactly the keys given', add('alice', [K3], true), { [AK]: `${K1}\n${K2}\n` }],
    ['add: reset with no keys empties the file', add('alice', [], true), { [AK]: `${K1}\n` }],
    ['add: reset false is no reset', add('alice', [K3], false), { [AK]: `${K1}` }],
    [
      'add: an existing ~/.ssh keeps its mode and owner; the file gets the user and 0600',
      add('alice', [K1]),
      { 'alice/.ssh': { dir: true, mode: 0o755, owner: [0, 0] }, [AK]: 'old\n' },
    ],
    [
      'add: a key starting with # is refused, nothing written',
      add('alice', [K1, '# comment']),
      { [AK]: `${K2}\n` },
      /invalid OpenSSH public key: '# comment'/,
    ],
    ['add: a key with a newline is refused', add('alice', [`${K1}\n${K2}`]), {}, /invalid OpenSSH public key/],
    [
      'add: keys are checked before the user is looked up',
      add('nobody-here', ['#x']),
      {},
      /invalid OpenSSH public key/,
    ],
    ['add: an unknown user', add('nobody-here', [K1]), {}, /failed to lookup user/],
    ['add: a home that does not exist', add('nohome', [K1]), {}, /failed to create directory/],
    ['add: ~/.ssh is a file', add('alice', [K1]), { 'alice/.ssh': 'not a directory' }, /File exists/],
    [
      'add: authorized_keys is a directory (unreadable counts as none; the rename fails)',
      add('alice', [K1]),
      { [AK]: { dir: true } },
      /g_rename\(\) failed: Is a directory/,
    ],
    [
      'add: authorized_keys is a symlink: replaced by a file, the target kept',
      add('alice', [K1]),
      { 'alice/keys': `${K2}\n`, [AK]: { link: '../keys' } },
    ],
    ['add: authorized_keys is a dangling symlink', add('alice', [K1]), { [AK]: { link: '../nowhere' } }],
    ['add: a read-only home', add('rofs', [K1]), {}, /Read-only file system/],
    ['add: a read-only ~/.ssh', add('rofs2', [K1]), {}, /Failed to create file/],
    ['add: a home with a trailing slash', add('bob', [K1]), {}],
    ['add: a user named with digits only', add('1000', [K2]), {}],
    ['add: keys with non-ASCII characters and a NUL', add('alice', ['ssh-rsa AAAA é✓', 'ssh-rsa a\u0000b']), {}],
    ['add: keys not a list', add('alice', K1), {}, /expected: array/],
    ['add: a key not a string', add('alice', [K1, 7]), {}, /'keys\[1\]', expected: string/],
    ['add: reset not a boolean', add('alice', [K1], 'yes' as unknown as boolean), {}, /expected: boolean/],
    // guest-ssh-remove-authorized-keys
    [
      'remove: every equal line goes, comments and others stay',
      remove('alice', [K1, K3]),
      { [AK]: `${K1}\n# c\n${K2}\n${K1}\n${K3}\n` },
    ],
    ['remove: lines that only look alike stay', remove('alice', [K1]), { [AK]: ` ${K1}\n${K1} \n` }],
    [
      'remove: no keys rewrites the file with the user as owner and 0600',
      remove('alice', []),
      { [AK]: `${K1}\n`, 'alice/.ssh': { dir: true, mode: 0o755 } },
    ],
    ['remove: no file is a success and creates nothing', remove('alice', [K1]), {}, /"return": \{\}/],
    ['remove: an empty file', remove('alice', [K1]), { [AK]: '' }],
    ['remove: authorized_keys is a directory', remove('alice', [K1]), { [AK]: { dir: true } }, /failed to read/],
    [
      'remove: a dangling symlink counts as no file',
      remove('alice', [K1]),
      { [AK]: { link: '../nowhere' } },
      /"return": \{\}/,
    ],
    [
      'remove: an invalid key is refused first',
      remove('nobody-here', ['ok', '#bad']),
      {},
      /invalid OpenSSH public key: '#bad'/,
    ],
    ['remove: an unknown user', remove('nobody-here', [K1]), {}, /failed to lookup user/],
    ['remove: on a read-only home with no file', remove('rofs', [K1]), {}, /"return": \{\}/],
  ];
  for (const [title, request, files, expect] of CASES) {
    test(title, async () => {
      const o = await same(rig, request, layout(files), [homes, ro]);
      if (expect) assert.match(o.replies.join('\n'), expect);
    });
  }

  test('add: what ~/.ssh and the file look like afterwards', async () => {
    const o = await same(rig, add('alice', [K1, K2]), layout(), [homes]);
    const entry = (p: string) => o.trees[0]!.find((e) => e.path === p);
    assert.deepEqual(entry('alice/.ssh'), { path: 'alice/.ssh', mode: '700', owner: '1234:1235', type: 'dir' });
    assert.deepEqual(entry('alice/.ssh/authorized_keys'), {
      path: 'alice/.ssh/authorized_keys',
      mode: '600',
      owner: '1234:1235',
      type: 'file',
      content: `${K1}\n${K2}`,
    });
  });

  test('add then get then remove, one after the other on each agent', async () => {
    const steps = [add('alice', [K1, K2]), add('alice', [K3]), get('alice'), remove('alice', [K2]), get('alice')];
    const seen: Record<string, string[]> = {};
    for (const kind of KINDS) {
      layout()();
      seen[kind] = [];
      for (const s of steps) seen[kind].push(...(await rig.send(kind, s)).replies);
      seen[kind].push(JSON.stringify(snapshot(rig.host(homes))));
    }
    assert.deepEqual(seen['quiesce'], seen['qemu-ga']);
  });
});

describe('the commands while frozen, blocked, and in guest-info', { skip: SKIP }, () => {
  let frozen: AdminRig;
  let blocked: AdminRig;
  before(async () => {
    frozen = await AdminRig.start({ frozen: true });
    blocked = await AdminRig.start({ block: [...ADMIN_COMMANDS] });
  });
  after(async () => {
    await frozen?.stop();
    await blocked?.stop();
  });

  // Each is refused before it runs; set-time still gets only a time the reference rejects anyway.
  const REQUESTS: Record<(typeof ADMIN_COMMANDS)[number], object> = {
    'guest-set-time': { time: -1000000000000000000 },
    'guest-set-vcpus': { vcpus: [] },
    'guest-set-user-password': { username: 'alice', password: '', crypted: false },
    'guest-set-memory-blocks': { 'mem-blks': [] },
    'guest-ssh-get-authorized-keys': { username: 'alice' },
    'guest-ssh-add-authorized-keys': { username: 'alice', keys: [] },
    'guest-ssh-remove-authorized-keys': { username: 'alice', keys: [] },
  };
  for (const name of ADMIN_COMMANDS) {
    test(`frozen: ${name} is refused the same way, nothing runs`, async () => {
      const o = await same(frozen, { execute: name, arguments: REQUESTS[name] });
      assert.match(o.replies[0]!, /"class": "CommandNotFound".*agent is in frozen state/);
      assert.deepEqual(o.calls, []);
    });
    test(`-b: ${name} is refused the same way`, async () => {
      const o = await same(blocked, { execute: name, arguments: REQUESTS[name] });
      assert.match(o.replies[0]!, /"class": "CommandNotFound".*has been disabled/);
    });
  }

  interface Info {
    return: { supported_commands: { name: string; enabled: boolean; 'success-response': boolean }[] };
  }
  const entries = async (rig: AdminRig, kind: AgentKind) =>
    (JSON.parse((await rig.send(kind, { execute: 'guest-info' })).replies[0]!) as Info).return.supported_commands;

  for (const [title, pick] of [
    ['frozen', () => frozen],
    ['blocked', () => blocked],
  ] as const) {
    test(`guest-info (${title}): the commands where the reference lists them, with the same flags`, async () => {
      const ours = await entries(pick(), 'quiesce');
      const ref = await entries(pick(), 'qemu-ga');
      const refNames = new Set(ref.map((c) => c.name));
      const oursNames = new Set(ours.map((c) => c.name));
      for (const name of ADMIN_COMMANDS) assert.ok(oursNames.has(name) && refNames.has(name), name);
      const shared = (l: typeof ref, other: Set<string>) => l.filter((c) => other.has(c.name)).map((c) => c.name);
      assert.deepEqual(shared(ours, refNames), shared(ref, oursNames));
      const flags = (l: typeof ref) =>
        l.filter((c) => (ADMIN_COMMANDS as readonly string[]).includes(c.name)).map((c) => JSON.stringify(c));
      assert.deepEqual(flags(ours), flags(ref));
    });
  }
});
