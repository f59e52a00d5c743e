import { execFileSync, spawnSync } from 'node:child_process';
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
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_BUNDLE, QEMU_GA } from '../agents.js';

/**
 * The test guest's boot files: the host's Debian cloud kernel and an initramfs
 * holding busybox, node + the quiesce-agent bundle (at /agent/dist/, with any compiled
 * addons from agent/ at the same relative paths), the reference qemu-ga and
 * the virtio modules (see /work/shared/design/vm-lab.md).
 *
 * The initramfs is cached by a hash of what goes into it: the contents of the
 * project's files (agent bundle, init and shutdown scripts, this builder) and
 * path + size + mtime of the system files (node, qemu-ga, libraries, busybox,
 * modules: those change only through apt, which changes those too). Change any
 * of them and the next boot builds a new one.
 */

const HERE = dirname(fileURLToPath(import.meta.url));
export const INIT_SCRIPT = join(HERE, 'init.sh');
export const SHUTDOWN_SCRIPT = join(HERE, 'shutdown.sh');
const BUILDER = fileURLToPath(import.meta.url);
const AGENT_DIR = dirname(dirname(AGENT_BUNDLE));
const BUSYBOX = '/bin/busybox';
const NODE = '/usr/bin/node';

/** Modules to load, in this order; their modules.dep dependencies come first, built-ins are skipped. */
const MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_console',
  'virtio_blk',
  'ext4',
];

/** How many built initramfs files to keep in the cache (older ones are removed). */
const KEEP = 3;

export interface BootFiles {
  kernel: string;
  kernelVersion: string;
  initrd: string;
  /** True when this call built the initramfs (false: taken from the cache). */
  built: boolean;
  /** Time spent hashing (and building, if it did) in ms. */
  ms: number;
}

export function cacheDir(): string {
  const env = process.env['QUIESCE_VM_CACHE'];
  if (env) return env;
  const xdg = process.env['XDG_CACHE_HOME'];
  return xdg ? join(xdg, 'quiesce-vm') : '/var/tmp/quiesce-vm-cache';
}

/** The newest /boot/vmlinuz-*-cloud-amd64 whose modules are installed, or undefined. */
export function findKernel(): { kernel: string; version: string } | undefined {
  if (!existsSync('/boot')) return undefined;
  const versions = readdirSync('/boot')
    .filter((f) => /^vmlinuz-.*-cloud-amd64$/.test(f))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join('/lib/modules', v, 'modules.dep')))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  return version ? { kernel: `/boot/vmlinuz-${version}`, version } : undefined;
}

/** Why a guest cannot boot on this machine, or undefined when it can. */
export function vmUnavailable(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'needs Linux on x86_64';
  const missing = [
    ['qemu-system-x86_64', '/usr/bin/qemu-system-x86_64', 'qemu-system-x86'],
    ['busybox', BUSYBOX, 'busybox-static'],
    ['cpio', '/usr/bin/cpio', 'cpio'],
    ['qemu-ga', QEMU_GA, 'qemu-guest-agent'],
    ['mkfs.ext4', '/usr/sbin/mkfs.ext4', 'e2fsprogs'],
    ['node', NODE, 'nodejs at /usr/bin/node'],
  ].filter(([, path]) => !existsSync(path!));
  if (missing.length > 0) return `missing ${missing.map(([n, , p]) => `${n} (${p})`).join(', ')}`;
  if (!findKernel()) return 'no /boot/vmlinuz-*-cloud-amd64 with modules (linux-image-cloud-amd64)';
  if (!existsSync(AGENT_BUNDLE)) return `no agent bundle at ${AGENT_BUNDLE} (npm run build)`;
  if (spawnSync(BUSYBOX, ['--list']).stdout?.toString().includes('insmod') !== true)
    return `${BUSYBOX} is not a full busybox (busybox-static)`;
  return undefined;
}

/** Shared libraries (and the ELF loader) `ldd` lists for a binary, as absolute paths. */
export function lddLibs(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

/** Module files (relative to /lib/modules/<version>) in insertion order, dependencies first. */
export function moduleOrder(version: string, wanted: readonly string[] = MODULES): string[] {
  const root = join('/lib/modules', version);
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(root, 'modules.dep'), 'utf8').split('\n')) {
    const [mod, rest] = line.split(':');
    if (mod && rest !== undefined) deps.set(mod, rest.trim().split(/\s+/).filter(Boolean));
  }
  const builtin = new Set(
    readFileSync(join(root, 'modules.builtin'), 'utf8')
      .split('\n')
      .map((l) => baseName(l))
      .filter(Boolean),
  );
  const byName = new Map([...deps.keys()].map((p) => [baseName(p), p]));
  const order: string[] = [];
  const visit = (path: string): void => {
    if (order.includes(path)) return;
    // modules.dep lists a module's dependencies with the deepest last: load from the end.
    for (const d of [...(deps.get(path) ?? [])].reverse()) visit(d);
    order.push(path);
  };
  for (const name of wanted) {
    if (builtin.has(name)) continue;
    const path = byName.get(name);
    if (!path) throw new Error(`kernel ${version}: module ${name} is neither built in nor in modules.dep`);
    visit(path);
  }
  return order;
}

function uncompressed(path: string): string {
  return path.replace(/\.(xz|zst|gz)$/, '');
}

function baseName(modPath: string): string {
  return (modPath.split('/').pop() ?? '').replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

interface Entry {
  /** Path inside the initramfs. */
  dest: string;
  /** Host file to copy (dereferenced), or literal content. */
  src?: string;
  content?: string;
  mode?: number;
  /** Hash the content (project files) rather than path/size/mtime (system files). */
  hashContent?: boolean;
}

function entries(version: string, modules: string[]): Entry[] {
  const out: Entry[] = [
    { dest: 'init', src: INIT_SCRIPT, mode: 0o755, hashContent: true },
    { dest: 'sbin/shutdown', src: SHUTDOWN_SCRIPT, mode: 0o755, hashContent: true },
    { dest: 'bin/busybox', src: BUSYBOX, mode: 0o755 },
    { dest: 'usr/bin/node', src: NODE, mode: 0o755 },
    // The host's agent/ layout, so paths relative to the bundle resolve the same in the guest.
    { dest: 'agent/dist/quiesce-agent.mjs', src: AGENT_BUNDLE, mode: 0o644, hashContent: true },
    ...nativeAddons().map((f) => ({ dest: `agent/${relative(AGENT_DIR, f)}`, src: f, mode: 0o755, hashContent: true })),
    { dest: 'usr/sbin/qemu-ga', src: QEMU_GA, mode: 0o755 },
    {
      dest: 'etc/quiesce-vm/modules',
      content: modules.map((m) => `/lib/modules/${version}/${uncompressed(m)}`).join('\n') + '\n',
    },
  ];
  const libs = new Set([...lddLibs(NODE), ...lddLibs(QEMU_GA)]);
  for (const lib of [...libs].sort()) out.push({ dest: lib.slice(1), src: lib, mode: 0o755 });
  for (const m of modules) out.push({ dest: `lib/modules/${version}/${m}`, src: join('/lib/modules', version, m) });
  return out;
}

/** Compiled Node addons (`*.node`) under agent/, outside node_modules: the bundle cannot inline them. */
function nativeAddons(): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    let list;
    try {
      list = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of list) {
      if (e.isDirectory() && e.name !== 'node_modules' && e.name !== 'src') walk(join(dir, e.name));
      else if (e.isFile() && e.name.endsWith('.node')) found.push(join(dir, e.name));
    }
  };
  walk(AGENT_DIR);
  return found.sort();
}

function hashEntries(list: Entry[], version: string): string {
  const h = createHash('sha256');
  h.update(`kernel ${version}\n`);
  h.update(readFileSync(BUILDER)); // a change to how it is built is a change too
  for (const e of list) {
    h.update(`${e.dest}\n`);
    if (e.content !== undefined) h.update(e.content);
    else if (e.hashContent) h.update(readFileSync(e.src!));
    else {
      const st = statSync(e.src!);
      h.update(`${e.src} ${st.size} ${st.mtimeMs}`);
    }
    h.update('\n');
  }
  return h.digest('hex').slice(0, 24);
}

/**
 * Returns the kernel and an initramfs for the test guest, building the
 * initramfs (cpio newc + gzip -1) into the cache dir when its inputs changed.
 */
export function ensureBootFiles(): BootFiles {
  const started = Date.now();
  const why = vmUnavailable();
  if (why) throw new Error(`cannot build the test guest: ${why}`);
  const { kernel, version } = findKernel()!;
  const modules = moduleOrder(version);
  const list = entries(version, modules);
  const hash = hashEntries(list, version);
  const dir = cacheDir();
  mkdirSync(dir, { recursive: true });
  const initrd = join(dir, `initramfs-${hash}.cpio.gz`);
  if (existsSync(initrd)) return { kernel, kernelVersion: version, initrd, built: false, ms: Date.now() - started };

  const stage = mkdtempSync(join(dir, 'stage-'));
  const tmp = `${initrd}.${process.pid}.tmp`;
  try {
    for (const e of list) {
      const dest = join(stage, e.dest);
      mkdirSync(dirname(dest), { recursive: true });
      if (e.content !== undefined) writeFileSync(dest, e.content);
      else copyFileSync(e.src!, dest);
      chmodSync(dest, e.mode ?? 0o644);
    }
    // Decompress modules busybox insmod may not read compressed.
    for (const m of modules) {
      const dest = join(stage, 'lib/modules', version, m);
      const tool = m.endsWith('.xz') ? 'xz' : m.endsWith('.zst') ? 'zstd' : m.endsWith('.gz') ? 'gzip' : undefined;
      if (tool) {
        writeFileSync(uncompressed(dest), execFileSync(tool, ['-dc', dest], { maxBuffer: 1 << 28 }));
        unlinkSync(dest);
      }
    }
    // cpio newc, owner root, gzip -1 (fast; the archive is ~45 MB, mostly node).
    const r = spawnSync(
      'sh',
      ['-c', `find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '${tmp}'`],
      { cwd: stage, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    if (r.status !== 0) throw new Error(`building the initramfs failed: ${r.stderr.toString()}`);
    renameSync(tmp, initrd);
  } finally {
    rmSync(stage, { recursive: true, force: true });
    rmSync(tmp, { force: true });
  }
  prune(dir, initrd);
  return { kernel, kernelVersion: version, initrd, built: true, ms: Date.now() - started };
}

function prune(dir: string, keep: string): void {
  const old = readdirSync(dir)
    .filter((f) => /^initramfs-[0-9a-f]+\.cpio\.gz$/.test(f))
    .map((f) => join(dir, f))
    .filter((f) => f !== keep)
    .map((f) => ({ f, t: statSync(f).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of old.slice(KEEP - 1)) rmSync(f, { force: true });
}
