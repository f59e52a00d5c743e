// A Debian 12 (bookworm) root for installing the package: `debootstrap --variant=minbase` from the
// mirror this machine's apt uses, with policy-rc.d forbidding service starts, the .debs of nodejs
// and qemu-guest-agent (and their dependencies) already in its apt cache. The finished root is
// kept as a tarball in CACHE_DIR (bookworm-minbase-<arch>-<mirror hash>-v<recipe>.tar.gz, rebuilt
// when older than MAX_AGE_DAYS); each run unpacks a fresh copy under /var/tmp and removes it.
// Nothing is mounted in it: debootstrap's own /dev nodes, no /proc (the agent's smoke test needs
// none), never the host's /dev.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CACHE_DIR, debArch, sh } from './helpers.js';

/** Bump when the recipe below changes: older tarballs are then ignored. */
const RECIPE = 1;
const MAX_AGE_DAYS = 30;
/** Where roots are unpacked (a real filesystem: device nodes, no size-limited tmpfs). */
const WORK_PARENT = '/var/tmp';

export const CHROOT_ENV: NodeJS.ProcessEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  DEBIAN_FRONTEND: 'noninteractive',
  LC_ALL: 'C',
  HOME: '/root',
};

/**
 * The Debian mirror this machine's apt uses ($QUIESCE_DEBIAN_MIRROR overrides): the first enabled
 * `deb` source with the main component that is not a security archive, from sources.list and
 * sources.list.d (one-line and deb822 formats).
 */
export function debianMirror(): string {
  const override = process.env['QUIESCE_DEBIAN_MIRROR'];
  if (override) return override;
  const files = ['/etc/apt/sources.list'];
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) {
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(join('/etc/apt/sources.list.d', f));
    }
  }
  const candidates: string[] = [];
  const consider = (uri: string, suites: string[], components: string[]): void => {
    if (!/^https?:\/\//.test(uri) || /security/.test(uri)) return;
    if (!components.includes('main') || suites.every((s) => /-security$/.test(s))) return;
    candidates.push(uri.replace(/\/+$/, ''));
  };
  for (const file of files.filter((f) => existsSync(f))) {
    const text = readFileSync(file, 'utf8');
    if (file.endsWith('.sources')) {
      for (const para of text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>();
        let last = '';
        for (const line of para.split('\n')) {
          if (line.startsWith('#')) continue;
          const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
          if (m) fields.set((last = m[1]!.toLowerCase()), m[2]!);
          else if (/^\s/.test(line) && last) fields.set(last, `${fields.get(last)} ${line.trim()}`);
        }
        if (!(fields.get('types') ?? '').split(/\s+/).includes('deb')) continue;
        if (/^(no|false)$/i.test(fields.get('enabled') ?? 'yes')) continue;
        const list = (k: string): string[] => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
        for (const uri of list('uris')) consider(uri, list('suites'), list('components'));
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line.trim());
        if (m) consider(m[1]!, [m[2]!], m[3]!.split(/\s+/));
      }
    }
  }
  // A Debian archive first (a machine may list third-party repositories too).
  const mirror = candidates.find((u) => /\/debian$/.test(u)) ?? candidates[0];
  if (!mirror) throw new Error('no Debian mirror in /etc/apt/sources.list*: set QUIESCE_DEBIAN_MIRROR');
  return mirror;
}

export interface BookwormRoot {
  /** The root directory (chroot target). */
  readonly root: string;
  /** Whether it came from the cached tarball (else debootstrap ran). */
  readonly cached: boolean;
  /** Seconds spent making it (debootstrap and caching, or unpacking). */
  readonly seconds: number;
  /** Unmount check, then removal. */
  remove(): void;
}

/** Mount points at or under `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function removeTree(dir: string): void {
  // Nothing is ever mounted in these roots; if something is (a debootstrap killed half-way), unmount
  // it, and never delete through a mount that stays.
  for (const m of mountsUnder(dir)) sh('umount', [m], { allowFail: true });
  const left = mountsUnder(dir);
  if (left.length > 0) throw new Error(`not removing ${dir}: still mounted: ${left.join(', ')}`);
  sh('rm', ['-rf', '--one-file-system', dir]);
}

/** Roots left by runs that were killed (older than a day: no run takes that long). */
function pruneStaleRoots(): void {
  for (const f of readdirSync(WORK_PARENT)) {
    const dir = join(WORK_PARENT, f);
    if (f.startsWith('quiesce-pkg-root-') && Date.now() - statSync(dir).mtimeMs > 86_400_000) {
      try {
        removeTree(dir);
      } catch {
        // Still mounted: leave it.
      }
    }
  }
}

/** A fresh bookworm root, from the cache when there is one. */
export function bookwormRoot(): BookwormRoot {
  const t0 = Date.now();
  pruneStaleRoots();
  const arch = debArch();
  const mirror = debianMirror();
  const key = createHash('sha256').update(mirror).digest('hex').slice(0, 12);
  mkdirSync(CACHE_DIR, { recursive: true });
  const tarball = join(CACHE_DIR, `bookworm-minbase-${arch}-${key}-v${RECIPE}.tar.gz`);
  const dir = mkdtempSync(join(WORK_PARENT, 'quiesce-pkg-root-'));
  const root = join(dir, 'root');
  const done = (cached: boolean): BookwormRoot => ({
    root,
    cached,
    seconds: (Date.now() - t0) / 1000,
    remove: () => removeTree(dir),
  });
  try {
    const fresh = existsSync(tarball) && Date.now() - statSync(tarball).mtimeMs < MAX_AGE_DAYS * 86_400_000;
    if (fresh) {
      mkdirSync(root);
      sh('tar', ['--numeric-owner', '-xzpf', tarball, '-C', root]);
      return done(true);
    }
    const log = join(dir, 'debootstrap.log');
    const r = sh(
      'sh',
      ['-c', `debootstrap --variant=minbase --arch="$1" bookworm "$2" "$3" >"$4" 2>&1`, 'sh', arch, root, mirror, log],
      {
        allowFail: true,
        timeoutMs: 1_200_000,
      },
    );
    if (r.status !== 0) {
      const tail = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-30).join('\n') : '';
      throw new Error(`debootstrap --variant=minbase bookworm ${mirror} failed (${r.status}):\n${tail}`);
    }
    // No service starts in this root (qemu-guest-agent's postinst would try).
    sh('sh', [
      '-c',
      `printf '#!/bin/sh\\nexit 101\\n' >"$1/usr/sbin/policy-rc.d" && chmod 755 "$1/usr/sbin/policy-rc.d"`,
      'sh',
      root,
    ]);
    const inRoot = (...args: string[]): void => void sh('chroot', [root, ...args], { env: CHROOT_ENV });
    inRoot('apt-get', 'clean');
    inRoot(
      'apt-get',
      'install',
      '-y',
      '-qq',
      '--download-only',
      '--no-install-recommends',
      'nodejs',
      'qemu-guest-agent',
    );
    const tmp = `${tarball}.tmp-${process.pid}`;
    sh('tar', ['--numeric-owner', '-czf', tmp, '-C', root, '.']);
    renameSync(tmp, tarball);
    return done(false);
  } catch (err) {
    removeTree(dir);
    throw err;
  }
}
