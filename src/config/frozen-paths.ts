import { fstatSync, readlinkSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * How the check sees the host's filesystems; injectable so tests can describe
 * devices without mounting anything.
 */
export interface FilesystemProbe {
  /** The device of the filesystem `path` lives on (st_dev), or undefined if it cannot be stat'ed. */
  device(path: string): number | undefined;
  /** The process's stdout and stderr when they are regular files: their path and device. */
  stdioFiles(): readonly { readonly key: 'stdout' | 'stderr'; readonly path: string; readonly device: number }[];
}

export const hostProbe: FilesystemProbe = {
  device(path) {
    try {
      return statSync(path).dev;
    } catch {
      return undefined;
    }
  },
  stdioFiles() {
    const out: { key: 'stdout' | 'stderr'; path: string; device: number }[] = [];
    for (const [fd, key] of [
      [1, 'stdout'],
      [2, 'stderr'],
    ] as const) {
      try {
        // fstat, not stat of the link: the file may have been renamed or deleted since it was opened.
        const st = fstatSync(fd);
        if (st.isFile()) out.push({ key, path: readlinkSync(`/proc/self/fd/${fd}`), device: st.dev });
      } catch {
        // A closed descriptor, or no /proc: nothing to check.
      }
    }
    return out;
  },
};

/** The device of the nearest existing ancestor of `path` (a state dir not created yet lands where its parent is). */
function deviceOfPathOrAncestor(path: string, probe: FilesystemProbe): number | undefined {
  for (let p = path; ; p = dirname(p)) {
    const dev = probe.device(p);
    if (dev !== undefined || dirname(p) === p) return dev;
  }
}

/** What a `local` guest freezes and where quiesce writes on this host while it is frozen. */
export interface LocalFreeze {
  /** The guest's name, for the message ("local" for `quiesce freeze --local`). */
  readonly guest: string;
  readonly mountpoints: readonly string[];
  readonly stateDir: string;
  readonly metricsFile?: string | undefined;
}

/**
 * Problems, one per host path quiesce writes (journal, metrics, its own stdout
 * and stderr when they are files) that lives on a filesystem the local guest
 * freezes: a write there blocks until the thaw, and the thaw is what the
 * blocked process would have to do. A path is "on" a mountpoint when their
 * filesystems are the same device: freezing /var freezes / when /var is no
 * filesystem of its own. Mountpoints that do not exist here are left to the
 * agent's preflight. Each problem starts with the key path it concerns.
 */
export function localFreezeProblems(f: LocalFreeze, probe: FilesystemProbe = hostProbe): string[] {
  const frozen = new Map<number, string>();
  for (const m of f.mountpoints) {
    const dev = probe.device(m);
    if (dev !== undefined && !frozen.has(dev)) frozen.set(dev, m);
  }
  if (frozen.size === 0) return [];
  const targets: { key: string; path: string; device: number | undefined; writes: string }[] = [
    { key: 'stateDir', path: f.stateDir, device: deviceOfPathOrAncestor(f.stateDir, probe), writes: 'its journal' },
    ...(f.metricsFile
      ? [
          {
            key: 'metricsFile',
            path: f.metricsFile,
            device: deviceOfPathOrAncestor(f.metricsFile, probe),
            writes: 'its metrics',
          },
        ]
      : []),
    ...probe.stdioFiles().map((s) => ({ key: s.key, path: s.path, device: s.device, writes: `its ${s.key}` })),
  ];
  const problems: string[] = [];
  for (const t of targets) {
    const mountpoint = t.device === undefined ? undefined : frozen.get(t.device);
    if (mountpoint !== undefined)
      problems.push(
        `${t.key}: ${t.path} is on ${mountpoint}, which guest '${f.guest}' (local) freezes: the run would block writing ${t.writes} while frozen`,
      );
  }
  return problems;
}
