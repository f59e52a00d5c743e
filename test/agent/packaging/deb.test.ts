// The Debian package as built by `npm run package`: its files, modes, control fields, conffiles,
// maintainer scripts, systemd unit (systemd-analyze verify) and udev rule. Nothing is installed
// here; test/agent/packaging/bookworm.test.ts installs it into a Debian 12 root.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_DIR, AGENT_VERSION, buildPackage, debArch, have, sh } from './helpers.js';

const NO_DPKG = have('dpkg-deb') ? false : 'needs dpkg-deb (Debian/Ubuntu: the dpkg package)';
const NO_SYSTEMD = have('systemd-analyze') ? false : 'needs systemd-analyze (apt-get install systemd)';

const UNIT = '/lib/systemd/system/quiesce-agent.service';

/** Every entry of the package: path → [mode as ls shows it]. Directories end in '/'. */
const EXPECTED: Record<string, string> = {
  './': 'drwxr-xr-x',
  './etc/': 'drwxr-xr-x',
  './etc/qemu/': 'drwxr-xr-x',
  './etc/qemu/fsfreeze-hook': '-rwxr-xr-x',
  './etc/qemu/fsfreeze-hook.d/': 'drwxr-xr-x',
  './lib/': 'drwxr-xr-x',
  './lib/systemd/': 'drwxr-xr-x',
  './lib/systemd/system/': 'drwxr-xr-x',
  './lib/systemd/system/quiesce-agent.service': '-rw-r--r--',
  './lib/udev/': 'drwxr-xr-x',
  './lib/udev/rules.d/': 'drwxr-xr-x',
  './lib/udev/rules.d/60-quiesce-agent.rules': '-rw-r--r--',
  './usr/': 'drwxr-xr-x',
  './usr/lib/': 'drwxr-xr-x',
  './usr/lib/quiesce-agent/': 'drwxr-xr-x',
  './usr/lib/quiesce-agent/quiesce-agent.mjs': '-rw-r--r--',
  './usr/lib/quiesce-agent/quiesce-freeze.node': '-rw-r--r--',
  './usr/sbin/': 'drwxr-xr-x',
  './usr/sbin/quiesce-agent': '-rwxr-xr-x',
  './usr/share/': 'drwxr-xr-x',
  './usr/share/doc/': 'drwxr-xr-x',
  './usr/share/doc/quiesce-agent/': 'drwxr-xr-x',
  './usr/share/doc/quiesce-agent/README.md': '-rw-r--r--',
  './usr/share/doc/quiesce-agent/copyright': '-rw-r--r--',
  './usr/share/doc/quiesce-agent/examples/': 'drwxr-xr-x',
  './usr/share/doc/quiesce-agent/examples/qemu-ga.conf': '-rw-r--r--',
};

describe('the quiesce-agent .deb', { skip: NO_DPKG }, () => {
  let work: string;
  let deb: string;
  let tree: string;
  let control: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'quiesce-deb-'));
    const t0 = Date.now();
    deb = buildPackage(join(work, 'out'));
    console.log(`npm run package: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    tree = join(work, 'tree');
    control = join(work, 'control');
    sh('dpkg-deb', ['-x', deb, tree]);
    sh('dpkg-deb', ['-e', deb, control]);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test('is named quiesce-agent_<version>_<arch>.deb after agent/package.json', () => {
    assert.equal(deb.split('/').pop(), `quiesce-agent_${AGENT_VERSION}_${debArch()}.deb`);
  });

  test('control fields: depends on Node.js 18.15+, conflicts with qemu-guest-agent', () => {
    const fields = new Map<string, string>();
    for (const m of sh('dpkg-deb', ['-f', deb]).stdout.matchAll(/^([A-Za-z-]+): (.*(?:\n .*)*)/gm)) {
      fields.set(m[1]!, m[2]!);
    }
    assert.equal(fields.get('Package'), 'quiesce-agent');
    assert.equal(fields.get('Version'), AGENT_VERSION);
    assert.equal(fields.get('Architecture'), debArch());
    assert.match(fields.get('Depends') ?? '', /^nodejs \(>= 18\.15\)(, libc6 \(>= [\d.]+\))?$/);
    // One agent owns the port: apt swaps the two (and this one satisfies what needs qemu-guest-agent).
    // No Replaces: with it, `dpkg -i` would remove qemu-guest-agent on its own instead of refusing.
    assert.equal(fields.get('Conflicts'), 'qemu-guest-agent');
    assert.equal(fields.get('Provides'), 'qemu-guest-agent');
    assert.equal(fields.get('Replaces'), undefined);
    assert.match(fields.get('Maintainer') ?? '', /<[^>]+>$/);
    assert.match(fields.get('Installed-Size') ?? '', /^\d+$/);
    assert.ok(
      Number(fields.get('Installed-Size')) >=
        statSync(join(tree, 'usr/lib/quiesce-agent/quiesce-agent.mjs')).size / 1024,
    );
    assert.equal(fields.get('Section'), 'admin');
    assert.match(fields.get('Description') ?? '', /^QEMU guest agent .*\n /);
  });

  test('files and modes (dpkg-deb -c), all root:root', () => {
    const seen: Record<string, string> = {};
    for (const line of sh('dpkg-deb', ['-c', deb]).stdout.trim().split('\n')) {
      const [mode, owner, , , , path] = line.split(/\s+/);
      assert.equal(owner, 'root/root', line);
      seen[path!] = mode!;
    }
    assert.deepEqual(seen, EXPECTED);
  });

  test('control members (dpkg-deb -I): conffiles, md5sums, maintainer scripts', () => {
    const info = sh('dpkg-deb', ['-I', deb]).stdout;
    for (const member of ['conffiles', 'control', 'md5sums', 'postinst', 'postrm', 'prerm']) {
      assert.match(info, new RegExp(`\\s${member}\\s`), `${member} in dpkg-deb -I`);
    }
    assert.equal(readFileSync(join(control, 'conffiles'), 'utf8'), '/etc/qemu/fsfreeze-hook\n');
    for (const s of ['postinst', 'postrm', 'prerm']) {
      assert.equal(statSync(join(control, s)).mode & 0o777, 0o755, `${s} mode`);
      sh('sh', ['-n', join(control, s)]);
      const text = readFileSync(join(control, s), 'utf8');
      assert.match(text, /^#!\/bin\/sh\n/);
      // In chroots and image builds (no systemd running) the scripts touch no service.
      assert.match(text, /\[ -d \/run\/systemd\/system \]/);
    }
    // md5sums: every file but the conffile, each hash right.
    const sums = readFileSync(join(control, 'md5sums'), 'utf8').trim().split('\n');
    const listed = sums.map((l) => l.split('  ')[1]).sort();
    const files = Object.entries(EXPECTED)
      .filter(([p, m]) => m.startsWith('-') && p !== './etc/qemu/fsfreeze-hook')
      .map(([p]) => p.slice(2))
      .sort();
    assert.deepEqual(listed, files);
    for (const l of sums) {
      const [sum, path] = l.split('  ');
      assert.equal(
        createHash('md5')
          .update(readFileSync(join(tree, path!)))
          .digest('hex'),
        sum,
        path,
      );
    }
  });

  test('the bundle and addon are the built ones; the wrapper runs them with /usr/bin/node', () => {
    const same = (a: string, b: string): void => assert.ok(readFileSync(a).equals(readFileSync(b)), `${a} = ${b}`);
    same(join(tree, 'usr/lib/quiesce-agent/quiesce-agent.mjs'), join(AGENT_DIR, 'dist', 'quiesce-agent.mjs'));
    same(join(tree, 'usr/lib/quiesce-agent/quiesce-freeze.node'), join(AGENT_DIR, 'dist', 'quiesce-freeze.node'));
    const wrapper = join(tree, 'usr/sbin/quiesce-agent');
    sh('sh', ['-n', wrapper]);
    assert.match(
      readFileSync(wrapper, 'utf8'),
      /^exec "\$\{QUIESCE_AGENT_NODE:-\/usr\/bin\/node\}" \/usr\/lib\/quiesce-agent\/quiesce-agent\.mjs "\$@"$/m,
    );
  });

  test('the unit is bound to the virtio port, like qemu-guest-agent.service', () => {
    const unit = readFileSync(join(tree, UNIT), 'utf8');
    const lines = unit.split('\n').filter((l) => !l.startsWith('#') && l !== '');
    for (const l of [
      '[Unit]',
      'BindsTo=dev-virtio\\x2dports-org.qemu.guest_agent.0.device',
      'After=dev-virtio\\x2dports-org.qemu.guest_agent.0.device',
      '[Service]',
      'ExecStart=-/usr/sbin/quiesce-agent',
      'Restart=always',
      '[Install]',
    ]) {
      assert.ok(lines.includes(l), `${l} in the unit`);
    }
    // Not enabled by [Install]: udev starts it (no WantedBy= to pull it in without the port).
    assert.ok(!lines.some((l) => l.startsWith('WantedBy=')));
  });

  test('systemd-analyze verify accepts the unit', { skip: NO_SYSTEMD }, () => {
    const verify = (path: string): void => {
      const r = sh('systemd-analyze', ['verify', path], { allowFail: true });
      assert.equal(`${r.status} ${r.stderr.trim()}`, '0 ', `systemd-analyze verify ${path}`);
    };
    verify(join(tree, UNIT));
    // `ExecStart=-…` skips the check that the command is executable: check it with the path
    // of the packaged wrapper and without the '-'.
    const strict = join(work, 'quiesce-agent.service');
    const text = readFileSync(join(tree, UNIT), 'utf8');
    writeFileSync(
      strict,
      text.replace('ExecStart=-/usr/sbin/quiesce-agent', `ExecStart=${join(tree, 'usr/sbin/quiesce-agent')}`),
    );
    assert.notEqual(readFileSync(strict, 'utf8'), text);
    verify(strict);
  });

  test('the udev rule pulls the unit in for the guest-agent port', () => {
    const rule = readFileSync(join(tree, 'lib/udev/rules.d/60-quiesce-agent.rules'), 'utf8')
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n')
      .replace(/\\\n\s*/g, '')
      .trim();
    assert.equal(
      rule,
      'SUBSYSTEM=="virtio-ports", ATTR{name}=="org.qemu.guest_agent.0", ' +
        'TAG+="systemd", ENV{SYSTEMD_WANTS}="quiesce-agent.service"',
    );
  });

  test('the fsfreeze hook is a shell script; the example config parses', () => {
    sh('sh', ['-n', join(tree, 'etc/qemu/fsfreeze-hook')]);
    const bundle = join(tree, 'usr/lib/quiesce-agent/quiesce-agent.mjs');
    const example = join(tree, 'usr/share/doc/quiesce-agent/examples/qemu-ga.conf');
    const dump = sh(process.execPath, [bundle, '-D'], { env: { QGA_CONF: example } }).stdout;
    assert.match(dump, /^\[general\]\ndaemon=false\nmethod=virtio-serial\n/);
    // Every example setting uncommented (the first of a repeated key) parses too.
    const seen = new Set<string>();
    const live = readFileSync(example, 'utf8')
      .split('\n')
      .map((l) => {
        const m = /^#([a-z-]+)=(.*)$/.exec(l);
        if (!m || seen.has(m[1]!)) return l;
        seen.add(m[1]!);
        return `${m[1]}=${m[2]}`;
      })
      .join('\n');
    const uncommented = join(work, 'qemu-ga.conf');
    writeFileSync(uncommented, live);
    const all = sh(process.execPath, [bundle, '-D'], { env: { QGA_CONF: uncommented } }).stdout;
    assert.match(all, /^fsfreeze-include=\/,\/var\/lib\/postgresql$/m);
    assert.match(all, /^logfile=\/var\/log\/qemu-ga.log$/m);
  });
});
