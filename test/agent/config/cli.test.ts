import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_BUNDLE, haveQemuGa, QEMU_GA } from '../../helpers/agents.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'quiesce-cli-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], conf?: string): Run {
  const r = spawnSync(cmd, args, {
    env: { PATH: process.env['PATH'], QGA_CONF: conf ?? join(dir, 'no-such.conf') },
    encoding: 'utf8',
    timeout: 10_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const ours = (args: readonly string[], conf?: string): Run => run(process.execPath, [AGENT_BUNDLE, ...args], conf);
const ref = (args: readonly string[], conf?: string): Run => run(QEMU_GA, args, conf);

let confN = 0;
function conf(text: string): string {
  const path = join(dir, `c${confN++}.conf`);
  writeFileSync(path, text);
  return path;
}

describe('the agent bundle: bad flags and config', () => {
  const badFlags: string[][] = [
    ['-x'],
    ['--nope'],
    ['--d'],
    ['-m'],
    ['--verbose=1'],
    ['-m', 'bogus', '-p', '/x'],
    ['-m', 'unix-listen'],
    ['-t', 'relative'],
    ['-D', '-F', '/stray'],
  ];
  for (const argv of badFlags) {
    test(`prints one line and exits 2 for ${argv.join(' ')}`, () => {
      const r = ours(argv);
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^quiesce-agent: [^\n]+\n$/);
    });
  }

  const badConfs = ['garbage\n', '[general]\ndaemon=yes\n', '[general]\npath=a\\qb\n', 'x=1\n[general]\n'];
  for (const text of badConfs) {
    test(`prints one line naming the file and exits 2 for a config of ${JSON.stringify(text)}`, () => {
      const path = conf(text);
      const r = ours(['-D'], path);
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.ok(r.stderr.startsWith(`quiesce-agent: error loading configuration from path: ${path}, `), r.stderr);
      assert.equal(r.stderr.split('\n').length, 2);
    });
  }

  test('vsock-listen is refused when run, not when dumped', () => {
    assert.equal(ours(['-D', '-m', 'vsock-listen', '-p', '3:1234']).status, 0);
  });

  test('-V prints the version and exits 0', () => {
    const r = ours(['-V']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^quiesce-agent \d+\.\d+\.\d+\n$/);
  });

  test('-h prints the usage and exits 0', () => {
    const r = ours(['-h']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Usage: quiesce-agent /);
    for (const flag of ['-m', '-p', '-l', '-f', '-F', '-t', '-v', '-V', '-d', '-b', '-a', '-D', '-r', '-h']) {
      assert.match(r.stdout, new RegExp(`^  ${flag}, --`, 'm'), flag);
    }
  });

  test('-b help lists the commands, one a line, and exits 0', () => {
    const r = ours(['-b', 'help']);
    assert.equal(r.status, 0);
    const names = r.stdout.trimEnd().split('\n');
    for (const n of ['guest-sync-delimited', 'guest-sync', 'guest-ping', 'guest-info']) assert.ok(names.includes(n), n);
    assert.ok(
      names.every((n) => /^[a-z_][a-z0-9_.-]*$/.test(n)),
      r.stdout,
    );
    assert.equal(new Set(names).size, names.length);
  });
});

const NO_QEMU_GA = haveQemuGa()
  ? false
  : 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)';

describe('-D against qemu-ga -D', { skip: NO_QEMU_GA }, () => {
  // Same flags, same output: these all print what qemu-ga prints, byte for byte.
  const same: string[][] = [
    [],
    ['-m', 'virtio-serial'],
    ['-m', 'isa-serial'],
    ['-m', 'unix-listen', '-p', '/run/qga.sock'],
    ['-m', 'vsock-listen', '-p', '3:1234'],
    ['-m', 'stdio', '-p', '-'],
    ['-p', '/dev/vport0p1', '-l', '/var/log/qga.log', '-f', '/run/qga.pid', '-t', '/var/lib/qga'],
    ['-F'],
    ['-F/etc/hook'],
    ['--fsfreeze-hook=/x'],
    ['--fsfreeze-hook='],
    ['-v', '-d', '-r'],
    ['-vdr'],
    ['--verbose', '--daemonize', '--retry-path'],
    ['-b', 'guest-ping,guest-info', '-b', 'guest-sync'],
    ['-b', 'a,,b', '-b', ',c,'],
    ['--blacklist=a,b'],
    ['--b=x', '--bl=y'],
    ['--meth=unix-listen', '--pa=/s', '--stat=/st', '--r', '--dump'],
    ['--s=/statedir'],
    ['--fs'],
    ['-s', 'install'],
    ['-p', ' leading blank'],
    ['-p', 'two\nlines'],
    ['-p', 'back\\slash', '-l', '\ttab'],
    ['-b', ' x'],
    ['-l', '', '-f', ''],
    ['-D', '-D'],
  ];
  for (const argv of same) {
    test(`prints what qemu-ga prints for ${JSON.stringify(argv)}`, () => {
      const o = ours(['-D', ...argv]);
      const r = ref(['-D', ...argv]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(o.status, 0, o.stderr);
      assert.equal(o.stdout, r.stdout);
    });
  }

  const sameConf: string[] = [
    '[general]\ndaemon=true\nmethod=unix-listen\npath=/q.sock\nlogfile=/l\npidfile=/p\nfsfreeze-hook=/h\nstatedir=/st\nverbose=1\nretry-path=true\nblock-rpcs=guest-ping,guest-info\n',
    '[general]\nblock-rpcs=guest-ping;guest-info\n',
    '[general]\nblock-rpcs=a,,b\n',
    '[general]\npath=\\s\\s x \n',
    '[general]\npath=x\\\\\n',
    '[general]\ndaemon=true \nverbose=0\n',
    '  # comment\n[general] \n\tpath\t= /z\n',
    '[other]\nmethod=isa-serial\n[general]\nfoo=\\q\n',
    '[general]\npath=/a\n[general]\npath=/b\n',
    '[general]\r\npath=/crlf\r\n',
  ];
  for (const text of sameConf) {
    test(`prints what qemu-ga prints for the config ${JSON.stringify(text)}`, () => {
      const path = conf(text);
      const o = ours(['-D'], path);
      const r = ref(['-D'], path);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(o.status, 0, o.stderr);
      assert.equal(o.stdout, r.stdout);
    });
  }

  test('config then command line: -b appended to block-rpcs, flags winning', () => {
    const path = conf('[general]\nblock-rpcs=a,b\nmethod=isa-serial\nverbose=true\n');
    const argv = ['-D', '-b', 'c', '-m', 'unix-listen', '-p', '/s'];
    assert.equal(ours(argv, path).stdout, ref(argv, path).stdout);
  });

  // Where the two legitimately differ, the rest still matches.
  test('with -a (qemu-ga 8.1+, not 7.2) ours adds one allow-rpcs line to what qemu-ga prints without it', () => {
    const o = ours(['-D', '-b', 'x', '-a', 'guest-ping,guest-info']);
    const r = ref(['-D', '-b', 'x']);
    assert.equal(o.stdout, `${r.stdout}allow-rpcs=guest-info,guest-ping\n`);
  });

  test("with this agent's own long options, only their lines are added", () => {
    const o = ours(['-D', '-m', 'unix-listen', '-p', '/s', '--fsfreeze-limit=5']);
    const r = ref(['-D', '-m', 'unix-listen', '-p', '/s']);
    assert.equal(o.stdout, `${r.stdout}fsfreeze-limit=5\n`);
  });

  test('both refuse the same bad flags and configs (qemu-ga with status 1, ours 2 by design)', () => {
    for (const argv of [['-x'], ['--d'], ['--nope'], ['-m'], ['--verbose=1']]) {
      assert.equal(ref(['-D', ...argv]).status, 1, argv.join(' '));
      assert.equal(ours(['-D', ...argv]).status, 2, argv.join(' '));
    }
    for (const text of ['garbage\n', '[general]\ndaemon=yes\n', '[general]\npath=a\\qb\n', '[general]\npath=x\\\n']) {
      const path = conf(text);
      assert.equal(ref(['-D'], path).status, 1, text);
      assert.equal(ours(['-D'], path).status, 2, text);
    }
  });

  test('prints the same ambiguity message as glibc does for qemu-ga', () => {
    for (const arg of ['--d', '--ver', '--p=x']) {
      const r = ref(['-D', arg]).stderr.split('\n')[0]!.replace(`${QEMU_GA}: `, '');
      assert.equal(ours(['-D', arg]).stderr, `quiesce-agent: ${r}\n`);
    }
  });
});
