// Builds the Debian package quiesce-agent_<version>_<arch>.deb (`npm run package`): the agent's
// bundle and FIFREEZE addon, a /usr/sbin wrapper running them with the system's node, the systemd
// unit and udev rule that start it on the guest-agent virtio port, and /etc/qemu's fsfreeze hook.
// The files come from agent/packaging/; the tree is staged in a temporary folder and packed with
// dpkg-deb --root-owner-group (no fakeroot, no debian/ source tree).
//
//   node scripts/package.mjs [--out DIR] [--no-build]
//
// --out: where the .deb goes (default agent/build/); --no-build: package the bundle and addon as
// they are instead of building them first. Prints the path of the .deb.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const agentDir = fileURLToPath(new URL('..', import.meta.url));
const packaging = join(agentDir, 'packaging');

const args = process.argv.slice(2);
let outDir = join(agentDir, 'build');
let build = true;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--out' && i + 1 < args.length) outDir = resolve(args[++i]);
  else if (args[i]?.startsWith('--out=')) outDir = resolve(args[i].slice('--out='.length));
  else if (args[i] === '--no-build') build = false;
  else fail(`unknown argument ${args[i]} (usage: package.mjs [--out DIR] [--no-build])`);
}

function fail(message) {
  process.stderr.write(`package: ${message}\n`);
  process.exit(1);
}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  if (r.error) fail(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${argv.join(' ')} exited with ${r.status}${r.stderr ? `: ${r.stderr}` : ''}`);
  return r.stdout;
}

/** npm's semver as a Debian version: a pre-release sorts before its release (1.0.0-rc.1 → 1.0.0~rc.1). */
function debianVersion(version) {
  if (!/^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?$/.test(version)) fail(`version ${version} is not semver`);
  const [main, meta] = version.split('+', 2);
  const debian = main.replace('-', '~') + (meta ? `+${meta}` : '');
  return debian.replace(/-/g, '.');
}

const pkg = JSON.parse(readFileSync(join(agentDir, 'package.json'), 'utf8'));
const version = debianVersion(pkg.version);

if (spawnSync('dpkg-deb', ['--version']).status !== 0) {
  fail('dpkg-deb is needed (Debian/Ubuntu: it comes with dpkg)');
}
const arch = run('dpkg', ['--print-architecture']).trim();

if (build) {
  // The addon is part of the package: a failed build fails here instead of shipping the fallback.
  run(process.execPath, [join(agentDir, 'scripts', 'build-native.mjs')], {
    env: { ...process.env, QUIESCE_REQUIRE_NATIVE: '1' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  run(process.execPath, [join(agentDir, 'scripts', 'bundle.mjs')], { stdio: ['ignore', 'inherit', 'inherit'] });
}
const bundle = join(agentDir, 'dist', 'quiesce-agent.mjs');
const addon = join(agentDir, 'dist', 'quiesce-freeze.node');
for (const f of [bundle, addon]) if (!existsSync(f)) fail(`${f} is missing (npm run build)`);

/** libc6 (>= the newest GLIBC_x.y symbol version the addon needs), when objdump can tell. */
function libcDepends() {
  const r = spawnSync('objdump', ['-T', addon], { encoding: 'utf8' });
  if (r.status !== 0) return '';
  const versions = [...r.stdout.matchAll(/\bGLIBC_(\d+(?:\.\d+)*)\b/g)].map((m) => m[1].split('.').map(Number));
  if (versions.length === 0) return '';
  versions.sort((a, b) => {
    for (let i = 0; i < Math.max(a.length, b.length); i++)
      if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
    return 0;
  });
  return `, libc6 (>= ${versions.at(-1).join('.')})`;
}

// The tree: [path in the package, source, mode]. Directories get 0755.
const files = [
  ['usr/lib/quiesce-agent/quiesce-agent.mjs', bundle, 0o644],
  ['usr/lib/quiesce-agent/quiesce-freeze.node', addon, 0o644],
  ['usr/sbin/quiesce-agent', join(packaging, 'quiesce-agent.sh'), 0o755],
  ['lib/systemd/system/quiesce-agent.service', join(packaging, 'quiesce-agent.service'), 0o644],
  ['lib/udev/rules.d/60-quiesce-agent.rules', join(packaging, '60-quiesce-agent.rules'), 0o644],
  ['etc/qemu/fsfreeze-hook', join(packaging, 'fsfreeze-hook'), 0o755],
  ['usr/share/doc/quiesce-agent/README.md', join(agentDir, 'README.md'), 0o644],
  ['usr/share/doc/quiesce-agent/copyright', join(packaging, 'debian', 'copyright'), 0o644],
  ['usr/share/doc/quiesce-agent/examples/qemu-ga.conf', join(packaging, 'qemu-ga.conf'), 0o644],
];
const emptyDirs = ['etc/qemu/fsfreeze-hook.d'];
const maintainerScripts = ['postinst', 'prerm', 'postrm'];

const stage = mkdtempSync(join(tmpdir(), 'quiesce-agent-deb-'));
try {
  const root = join(stage, 'root');
  const mkdir = (dir) => {
    // Every directory 0755 whatever the umask: mkdir -p then chmod each level.
    mkdirSync(dir, { recursive: true });
    for (let d = dir; d.startsWith(root) && d !== root; d = dirname(d)) chmodSync(d, 0o755);
  };
  mkdir(root);
  chmodSync(root, 0o755);
  for (const [path, source, mode] of files) {
    if (!existsSync(source)) fail(`${source} is missing`);
    const dest = join(root, path);
    mkdir(dirname(dest));
    copyFileSync(source, dest);
    chmodSync(dest, mode);
  }
  for (const d of emptyDirs) mkdir(join(root, d));

  const conffiles = readFileSync(join(packaging, 'debian', 'conffiles'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '');
  for (const c of conffiles) if (!existsSync(join(root, c))) fail(`conffile ${c} is not in the package`);

  // md5sums of every file but the conffiles (dpkg keeps those hashes itself), as dh_md5sums writes it.
  const all = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else all.push(p);
    }
  };
  walk(root);
  const md5sums = all
    .map((p) => `/${relative(root, p)}`)
    .filter((p) => !conffiles.includes(p))
    .map(
      (p) =>
        `${createHash('md5')
          .update(readFileSync(join(root, p)))
          .digest('hex')}  ${p.slice(1)}\n`,
    )
    .join('');

  // Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, plus one per directory.
  let kib = 0;
  const count = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      kib += e.isDirectory() ? 1 : Math.ceil(statSync(p).size / 1024);
      if (e.isDirectory()) count(p);
    }
  };
  count(root);

  const debian = join(root, 'DEBIAN');
  mkdir(debian);
  const control = readFileSync(join(packaging, 'debian', 'control.in'), 'utf8')
    .replace('@VERSION@', version)
    .replace('@ARCH@', arch)
    .replace('@INSTALLED_SIZE@', String(kib))
    .replace('@LIBC_DEPENDS@', libcDepends());
  if (/@[A-Z_]+@/.test(control)) fail(`control.in has an unfilled field: ${/@[A-Z_]+@/.exec(control)[0]}`);
  writeFileSync(join(debian, 'control'), control, { mode: 0o644 });
  writeFileSync(join(debian, 'conffiles'), `${conffiles.join('\n')}\n`, { mode: 0o644 });
  writeFileSync(join(debian, 'md5sums'), md5sums, { mode: 0o644 });
  for (const s of maintainerScripts) {
    copyFileSync(join(packaging, 'debian', s), join(debian, s));
    chmodSync(join(debian, s), 0o755);
  }
  for (const f of ['control', 'conffiles', 'md5sums']) chmodSync(join(debian, f), 0o644);

  mkdirSync(outDir, { recursive: true });
  const name = `quiesce-agent_${version}_${arch}.deb`;
  const tmp = join(stage, name);
  run('dpkg-deb', ['--build', '--root-owner-group', '-Zxz', root, tmp]);
  // A rename, never a rewrite in place: whoever is reading the previous .deb keeps a whole file.
  const out = join(outDir, name);
  try {
    renameSync(tmp, out);
  } catch {
    copyFileSync(tmp, `${out}.tmp-${process.pid}`);
    renameSync(`${out}.tmp-${process.pid}`, out);
  }
  process.stdout.write(`${out}\n`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
