import { QuiesceError } from '../errors.js';

/** What a backup holds relative to its parent. */
export type Level = 'full' | 'incremental' | 'differential';

/** One disk of a backup: an image in the backup's folder whose backing file is the parent's image of the same disk. */
export interface ManifestDisk {
  /** The {disk} name (device id or node name as the config gives it). */
  readonly name: string;
  /** The QEMU node copied (provider libvirt: the image the domain's disk read from). */
  readonly node: string;
  readonly virtualSize: number;
  /** The image's file name inside the backup's folder. */
  readonly file: string;
  readonly format: 'qcow2';
  /** Bytes the image takes on disk (allocated), after the copy. */
  readonly bytesWritten: number;
}

/** The libvirt checkpoint a backup created (provider libvirt): what redefines it if libvirt loses it. */
export interface ManifestCheckpoint {
  /** The checkpoint's name (the same as the manifest's bitmap). */
  readonly name: string;
  /** Its XML as `checkpoint-dumpxml` gives it (what `checkpoint-create --redefine` takes back). */
  readonly xml: string;
}

/** One check of a verify run, as the manifest records it. */
export interface VerifiedCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail?: string;
}

/** A verify step's verdict on a backup (manifests from before fsck/boot carry ok, at and how only). */
export interface Verified {
  readonly ok: boolean;
  /** ISO time the verify started. */
  readonly at: string;
  /** The verify kind: fsck, boot, or a command. */
  readonly how: string;
  readonly checks?: readonly VerifiedCheck[];
  readonly durationMs?: number;
  /** Boot: QEMU started → the agent answered guest-ping. */
  readonly bootMs?: number;
}

/**
 * One backup, as `REPO/GUEST/CHAIN/ID/manifest.json` records it. Written
 * atomically and last: images without a manifest, or with `complete: false`,
 * are never a parent and never a restore point.
 */
export interface Manifest {
  readonly version: 1;
  /** `YYYYMMDDTHHMMSSZ-xxxx`: sorts by time. */
  readonly id: string;
  readonly guest: string;
  /** ISO time of the point in time (the transaction's reply). */
  readonly time: string;
  readonly level: Level;
  /** The id of the chain's full (a full is its own chain). */
  readonly chain: string;
  /** The backup whose images are this one's backing files; null for a full. */
  readonly parent: string | null;
  /**
   * The persistent dirty bitmap (one per disk, same name) that tracks changes
   * for the chain; with provider libvirt also the name of the checkpoint that owns it.
   */
  readonly bitmap: string;
  /** Provider libvirt: the checkpoint this backup created (none for a differential). */
  readonly checkpoint?: ManifestCheckpoint;
  /** Why this level was taken (auto's reason, or "level: full in the config"). */
  readonly reason: string;
  readonly disks: readonly ManifestDisk[];
  readonly consistency: 'application' | 'filesystem' | 'crash' | 'none';
  readonly frozenWindowMs: number | null;
  readonly quiesceVersion: string;
  readonly agentVersion: string | null;
  readonly complete: boolean;
  /** Why it did not complete. */
  readonly error?: string;
  /** Set by a verify step that passed or failed on this backup. */
  readonly verified?: Verified;
}

const ID = /^\d{8}T\d{6}Z-[0-9a-f]{4}$/;

/** A new backup id for `at` (sorts by time; the random part keeps two in one second apart). */
export function backupId(at: Date, random: string): string {
  const stamp = at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${random}`;
}

/** The time a backup id names (second precision; an id not in the form gives an invalid Date). */
export function idTime(id: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id);
  return m ? new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!)) : new Date(Number.NaN);
}

export function isBackupId(s: string): boolean {
  return ID.test(s);
}

/** Checks a parsed manifest's fields; throws QuiesceError REPOSITORY naming the file and the field. */
export function validateManifest(v: unknown, file: string): Manifest {
  const bad = (field: string): never => {
    throw new QuiesceError('REPOSITORY', `${file}: not a quiesce manifest (${field})`);
  };
  if (typeof v !== 'object' || v === null) return bad('not an object');
  const m = v as Record<string, unknown>;
  if (m['version'] !== 1) bad('version');
  for (const k of ['id', 'chain']) if (typeof m[k] !== 'string' || !ID.test(m[k])) bad(k);
  for (const k of ['guest', 'time', 'bitmap', 'reason', 'quiesceVersion'])
    if (typeof m[k] !== 'string' || m[k] === '') bad(k);
  if (Number.isNaN(Date.parse(m['time'] as string))) bad('time');
  if (!['full', 'incremental', 'differential'].includes(m['level'] as string)) bad('level');
  if (m['parent'] !== null && (typeof m['parent'] !== 'string' || !ID.test(m['parent']))) bad('parent');
  if ((m['level'] === 'full') !== (m['parent'] === null)) bad('parent (a full has none; only a full)');
  if (m['level'] === 'full' && m['chain'] !== m['id']) bad('chain (a full starts its own)');
  if (!['application', 'filesystem', 'crash', 'none'].includes(m['consistency'] as string)) bad('consistency');
  if (m['frozenWindowMs'] !== null && typeof m['frozenWindowMs'] !== 'number') bad('frozenWindowMs');
  if (m['agentVersion'] !== null && typeof m['agentVersion'] !== 'string') bad('agentVersion');
  if (typeof m['complete'] !== 'boolean') bad('complete');
  if (!Array.isArray(m['disks']) || m['disks'].length === 0) bad('disks');
  for (const d of m['disks'] as unknown[]) {
    const o = d as Record<string, unknown>;
    if (typeof o !== 'object' || o === null) bad('disks[]');
    if (typeof o['name'] !== 'string' || typeof o['node'] !== 'string') bad('disks[].name');
    if (typeof o['file'] !== 'string' || o['file'].includes('/') || o['file'].startsWith('.')) bad('disks[].file');
    if (o['format'] !== 'qcow2') bad('disks[].format');
    if (!Number.isSafeInteger(o['virtualSize']) || (o['virtualSize'] as number) <= 0) bad('disks[].virtualSize');
    if (!Number.isSafeInteger(o['bytesWritten']) || (o['bytesWritten'] as number) < 0) bad('disks[].bytesWritten');
  }
  if (m['verified'] !== undefined) checkVerified(m['verified'], bad);
  if (m['checkpoint'] !== undefined) {
    const c = m['checkpoint'] as Record<string, unknown>;
    if (typeof c !== 'object' || c === null) bad('checkpoint');
    if (typeof c['name'] !== 'string' || c['name'] === '') bad('checkpoint.name');
    if (typeof c['xml'] !== 'string' || c['xml'] === '') bad('checkpoint.xml');
  }
  return m as unknown as Manifest;
}

function checkVerified(v: unknown, bad: (field: string) => never): void {
  if (typeof v !== 'object' || v === null) return bad('verified');
  const o = v as Record<string, unknown>;
  if (typeof o['ok'] !== 'boolean') bad('verified.ok');
  if (typeof o['at'] !== 'string' || Number.isNaN(Date.parse(o['at']))) bad('verified.at');
  if (typeof o['how'] !== 'string' || o['how'] === '') bad('verified.how');
  for (const k of ['durationMs', 'bootMs'])
    if (o[k] !== undefined && (typeof o[k] !== 'number' || !(o[k] >= 0))) bad(`verified.${k}`);
  if (o['checks'] === undefined) return;
  if (!Array.isArray(o['checks'])) bad('verified.checks');
  for (const c of o['checks'] as unknown[]) {
    const r = c as Record<string, unknown>;
    if (typeof r !== 'object' || r === null || typeof r['name'] !== 'string' || typeof r['ok'] !== 'boolean')
      bad('verified.checks[]');
    if (r['detail'] !== undefined && typeof r['detail'] !== 'string') bad('verified.checks[].detail');
  }
}
