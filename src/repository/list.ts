import type { Catalog } from './catalog.js';
import type { Level, Manifest } from './manifest.js';

/** One row of `quiesce backups`: a restore point, or (with --all) a folder that is not one. */
export interface BackupRow {
  readonly guest: string;
  readonly id: string;
  /** ISO time of the point in time. */
  readonly time: string;
  readonly level: Level | null;
  readonly chain: string;
  readonly parent: string | null;
  readonly disks: readonly { readonly name: string; readonly virtualSize: number }[];
  /** Sum of the images' bytes on disk (what this backup added, not its lineage). */
  readonly bytes: number;
  readonly consistency: Manifest['consistency'] | null;
  /** The verify step's verdict on it; null when none ran. */
  readonly verified: 'ok' | 'failed' | null;
  /** A restore point; false rows come only with --all and carry `why`. */
  readonly usable: boolean;
  readonly why?: string;
}

/** The rows of a catalog, oldest first; unusable folders too with `all`. */
export function backupRows(c: Catalog, all: boolean): BackupRow[] {
  const rows: BackupRow[] = c.points.map((p) => row(c.guest, p.manifest.chain, p.manifest));
  if (all)
    for (const u of c.unusable)
      rows.push({
        ...(u.manifest
          ? row(c.guest, u.chain, u.manifest)
          : {
              guest: c.guest,
              id: u.id,
              time: u.time.toISOString(),
              level: null,
              chain: u.chain,
              parent: null,
              disks: [],
              bytes: 0,
              consistency: null,
              verified: null,
            }),
        id: u.id,
        usable: false,
        why: u.why,
      });
  return rows.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

function row(guest: string, chain: string, m: Manifest): BackupRow {
  return {
    guest,
    id: m.id,
    time: m.time,
    level: m.level,
    chain,
    parent: m.parent,
    disks: m.disks.map((d) => ({ name: d.name, virtualSize: d.virtualSize })),
    bytes: m.disks.reduce((n, d) => n + d.bytesWritten, 0),
    consistency: m.consistency,
    verified: m.verified === undefined ? null : m.verified.ok ? 'ok' : 'failed',
    usable: true,
  };
}

/** 1536 → "1.5 KiB": binary units, as qemu-img prints sizes. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${n} B`;
  return `${v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}
