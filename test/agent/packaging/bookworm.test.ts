// The .deb installed into a Debian 12 (bookworm) root made by debootstrap (cached, see
// bookworm-root.ts): apt pulls Debian's own nodejs (18), the agent runs from /usr/sbin through
// that node and answers on a unix socket seen from outside the root, /etc/qemu/qemu-ga.conf is
// read, the fsfreeze hook runs fsfreeze-hook.d; dpkg refuses it beside qemu-guest-agent, apt
// swaps the two, purge leaves nothing. Nothing is frozen, no service is started (policy-rc.d and
// no systemd in the root), no /proc or /dev is mounted into the root.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { bookwormRoot, CHROOT_ENV, type BookwormRoot } from './bookworm-root.js';
import {
  ADDON_CHECK,
  AGENT_DIR,
  AGENT_VERSION,
  buildPackage,
  have,
  isRoot,
  sh,
  smokeTest,
  startListening,
} from './helpers.js';

const MISSING = ['debootstrap', 'dpkg-deb', 'chroot', 'tar'].filter((t) => !have(t));
const SKIP = !isRoot()
  ? 'needs root (debootstrap and chroot)'
  : MISSING.length > 0
    ? `needs ${MISSING.join(', ')} (apt-get install debootstrap)`
    : process.platform !== 'linux'
      ? 'Linux only'
      : false;

/** The package's own files, which must all go on purge. */
const PACKAGE_FILES = [
  '/usr/lib/quiesce-agent/quiesce-agent.mjs',
  '/usr/lib/quiesce-agent/quiesce-freeze.node',
  '/usr/sbin/quiesce-agent',
  '/lib/systemd/system/quiesce-agent.service',
  '/lib/udev/rules.d/60-quiesce-agent.rules',
  '/etc/qemu/fsfreeze-hook',
  '/usr/share/doc/quiesce-agent/copyright',
];

describe('the .deb in a Debian 12 root', { skip: SKIP, timeout: 1_800_000 }, () => {
  let work: string;
  let bw: BookwormRoot | undefined;
  let root: string;
  let debInRoot: string;
  before(
    () => {
      work = mkdtempSync(join(tmpdir(), 'quiesce-bookworm-'));
      const deb = buildPackage(join(work, 'out'));
      bw = bookwormRoot();
      root = bw.root;
      console.log(
        `bookworm root: ${bw.cached ? 'unpacked from the cache' : 'debootstrap, then cached'} in ${bw.seconds.toFixed(1)} s`,
      );
      debInRoot = `/tmp/${basename(deb)}`;
      copyFileSync(deb, join(root, debInRoot));
    },
    { timeout: 1_500_000 },
  );
  after(() => {
    bw?.remove();
    rmSync(work, { recursive: true, force: true });
  });

  /** A command in the root, stdin empty (a dpkg prompt fails instead of waiting). */
  const inRoot = (args: readonly string[], opts: { allowFail?: boolean } = {}) =>
    sh('chroot', [root, ...args], { env: CHROOT_ENV, ...opts });
  const apt = (...args: string[]): string => {
    const r = inRoot(['apt-get', '-y', '--no-install-recommends', ...args]);
    return r.stdout + r.stderr;
  };
  const status = (pkg: string): string =>
    inRoot(['dpkg-query', '-W', '-f=${Status}', pkg], { allowFail: true }).stdout.trim();
  /** The names apt listed under a heading ("The following NEW packages will be installed:"). */
  const listed = (out: string, heading: RegExp): string[] => {
    const m = new RegExp(`${heading.source}\\n((?:  .*\\n)+)`).exec(out);
    return m ? m[1]!.trim().split(/\s+/) : [];
  };
  const timed = <T>(t: { diagnostic(s: string): void }, what: string, f: () => T): T => {
    const t0 = Date.now();
    const r = f();
    t.diagnostic(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return r;
  };

  test('apt-get install ./quiesce-agent.deb pulls in nodejs from bookworm', (t) => {
    const out = timed(t, 'apt-get install ./deb', () => apt('install', debInRoot));
    const added = listed(out, /The following NEW packages will be installed:/);
    assert.ok(added.includes('quiesce-agent') && added.includes('nodejs'), out);
    assert.equal(status('quiesce-agent'), 'install ok installed');
    assert.equal(status('nodejs'), 'install ok installed');
    const nodeVersion = inRoot(['dpkg-query', '-W', '-f=${Version}', 'nodejs']).stdout;
    assert.match(nodeVersion, /^18\./, 'Debian 12 ships Node.js 18');
    // Every file as packaged (md5sums), the conffile registered.
    assert.equal(inRoot(['dpkg', '--verify', 'quiesce-agent']).stdout, '');
    assert.match(
      inRoot(['dpkg-query', '-W', '-f=${Conffiles}', 'quiesce-agent']).stdout,
      /^ \/etc\/qemu\/fsfreeze-hook [0-9a-f]{32}$/,
    );
    assert.ok(existsSync(join(root, 'etc/qemu/fsfreeze-hook.d')));
  });

  test("the agent runs on the root's Node.js 18 and answers through a socket from outside", async (t) => {
    assert.match(inRoot(['node', '--version']).stdout, /^v18\./);
    assert.equal(inRoot(['quiesce-agent', '-V']).stdout, `quiesce-agent ${AGENT_VERSION}\n`);
    // The addon, built against the build machine's Node, under Debian's (libnode + shared libuv).
    assert.match(
      inRoot(['node', '-e', ADDON_CHECK, '/usr/lib/quiesce-agent/quiesce-freeze.node']).stdout,
      /^addon ok v18\./,
    );

    const t0 = Date.now();
    const agent = await startListening(
      'chroot',
      [root, 'quiesce-agent', '-m', 'unix-listen', '-p', '/tmp/x.sock', '-t', '/tmp', '-v'],
      join(root, 'tmp/x.sock'),
      CHROOT_ENV,
    );
    t.diagnostic(`listening after ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    try {
      await smokeTest(join(root, 'tmp/x.sock'));
    } finally {
      await agent.stop();
    }
    assert.match(agent.stderr(), /FIFREEZE\/FITHAW through the addon/);
    assert.doesNotMatch(agent.stderr(), /Warning/);
  });

  test('/etc/qemu/qemu-ga.conf is read: the agent runs with no flags from it', async () => {
    const conf = join(root, 'etc/qemu/qemu-ga.conf');
    writeFileSync(conf, '[general]\nmethod=unix-listen\npath=/tmp/conf.sock\nstatedir=/tmp\nverbose=true\n');
    try {
      assert.match(inRoot(['quiesce-agent', '-D']).stdout, /^method=unix-listen\npath=\/tmp\/conf\.sock$/m);
      const agent = await startListening('chroot', [root, 'quiesce-agent'], join(root, 'tmp/conf.sock'), CHROOT_ENV);
      try {
        await smokeTest(join(root, 'tmp/conf.sock'));
      } finally {
        await agent.stop();
      }
    } finally {
      rmSync(conf, { force: true });
    }
  });

  test('the default hook is the packaged /etc/qemu/fsfreeze-hook; it runs fsfreeze-hook.d', () => {
    assert.match(inRoot(['quiesce-agent', '-F', '-D']).stdout, /^fsfreeze-hook=\/etc\/qemu\/fsfreeze-hook$/m);
    const d = join(root, 'etc/qemu/fsfreeze-hook.d');
    const script = (name: string, mode: number): void =>
      writeFileSync(join(d, name), `#!/bin/sh\necho "${name} $1" >>/tmp/hook-order\necho "output of ${name}"\n`, {
        mode,
      });
    script('20-b', 0o755);
    script('10-a', 0o755);
    script('30-c.dpkg-old', 0o755); // a package manager's leftover: skipped
    script('40-d', 0o644); // not executable: skipped
    try {
      inRoot(['/etc/qemu/fsfreeze-hook', 'freeze']);
      inRoot(['/etc/qemu/fsfreeze-hook', 'thaw']);
      assert.equal(
        readFileSync(join(root, 'tmp/hook-order'), 'utf8'),
        '10-a freeze\n20-b freeze\n10-a thaw\n20-b thaw\n',
      );
      const log = readFileSync(join(root, 'var/log/qga-fsfreeze-hook.log'), 'utf8');
      assert.match(
        log,
        /execute \/etc\/qemu\/fsfreeze-hook\.d\/10-a freeze\noutput of 10-a\n.*10-a finished with status=0\n/,
      );
    } finally {
      for (const f of ['10-a', '20-b', '30-c.dpkg-old', '40-d']) rmSync(join(d, f), { force: true });
      rmSync(join(root, 'tmp/hook-order'), { force: true });
      rmSync(join(root, 'var/log/qga-fsfreeze-hook.log'), { force: true });
    }
  });

  test('dpkg -i refuses it while qemu-guest-agent is installed, and changes nothing', (t) => {
    // Installing qemu-guest-agent removes ours (one agent owns the port)...
    const out = timed(t, 'apt-get install qemu-guest-agent', () => apt('install', 'qemu-guest-agent'));
    assert.deepEqual(listed(out, /The following packages will be REMOVED:/), ['quiesce-agent']);
    assert.equal(status('qemu-guest-agent'), 'install ok installed');
    // ...and dpkg -i of ours then fails cleanly.
    const r = inRoot(['dpkg', '-i', debInRoot], { allowFail: true });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /quiesce-agent conflicts with qemu-guest-agent/);
    assert.match(r.stderr, /conflicting packages - not installing quiesce-agent/);
    assert.equal(status('qemu-guest-agent'), 'install ok installed');
    assert.notEqual(status('quiesce-agent'), 'install ok installed');
    assert.ok(existsSync(join(root, 'usr/sbin/qemu-ga')));
    assert.ok(!existsSync(join(root, 'usr/sbin/quiesce-agent')));
    assert.equal(inRoot(['dpkg', '--audit']).stdout, '', 'no package left half-installed');
  });

  test('apt-get install ./quiesce-agent.deb takes over from qemu-guest-agent', (t) => {
    const out = timed(t, 'apt-get install ./deb over qemu-guest-agent', () => apt('install', debInRoot));
    assert.deepEqual(listed(out, /The following packages will be REMOVED:/), ['qemu-guest-agent']);
    assert.equal(status('quiesce-agent'), 'install ok installed');
    assert.equal(status('qemu-guest-agent'), 'deinstall ok config-files');
    assert.ok(!existsSync(join(root, 'usr/sbin/qemu-ga')));
    assert.ok(!existsSync(join(root, 'lib/udev/rules.d/60-qemu-guest-agent.rules')));
    assert.ok(!existsSync(join(root, 'lib/systemd/system/qemu-guest-agent.service')));
    // The shared conffile is ours now, and stays when qemu-guest-agent's config is purged.
    const ours = readFileSync(join(AGENT_DIR, 'packaging/fsfreeze-hook'), 'utf8');
    assert.equal(readFileSync(join(root, 'etc/qemu/fsfreeze-hook'), 'utf8'), ours);
    inRoot(['dpkg', '--purge', 'qemu-guest-agent']);
    assert.equal(readFileSync(join(root, 'etc/qemu/fsfreeze-hook'), 'utf8'), ours);
    assert.equal(inRoot(['dpkg', '--verify', 'quiesce-agent']).stdout, '');
  });

  test('apt-get purge removes every file it installed', () => {
    apt('purge', 'quiesce-agent');
    assert.match(status('quiesce-agent'), /^$|not-installed/);
    for (const f of PACKAGE_FILES) assert.ok(!existsSync(join(root, f)), `${f} is gone`);
    assert.ok(!existsSync(join(root, 'usr/lib/quiesce-agent')));
    // /etc/qemu goes with it (the hook was its only file); the root's nodejs stays (autoremove's job).
    const etc = join(root, 'etc/qemu');
    assert.deepEqual(
      existsSync(etc) ? sh('find', [etc, '-mindepth', '1']).stdout : '',
      '',
      'nothing left in /etc/qemu',
    );
  });
});
