import { randomBytes } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { QuiesceError } from '../../errors.js';
import { fillPlaceholders } from '../../config/placeholders.js';
import type { QmpClient } from '../../qmp/client.js';

/** A disk of the guest as QEMU knows it. */
export interface FoundDisk {
  /** The {disk} value: the name given in the config, or with `all` the device id (else the node name). */
  readonly name: string;
  /** The node backed up, or snapshotted (the device's top node). */
  readonly node: string;
  readonly size: number;
}

/** A disk as this run handles it: where it goes, and the prefix of the names this run gives QEMU for it. */
export interface Disk extends FoundDisk {
  /** The target with {disk} filled. */
  readonly target: string;
  /** `qz<run tag>-<index>`: see runName(). */
  readonly base: string;
}

/** What a node or job of this run is for (the last part of its name). */
export type NameRole = 'file' | 'fmt' | 'backup' | 'create' | 'overlay';

interface AttachedDisk {
  readonly device: string | undefined;
  readonly id: string | undefined;
  readonly node: string;
  readonly ro: boolean;
  readonly size: number;
}

/**
 * The disks to snapshot: the config's selection checked against query-block
 * (and, with `anyNode`, for backups, any named node).
 */
export async function resolveDisks(
  qmp: Pick<QmpClient, 'execute' | 'address'>,
  want: 'all' | readonly string[],
  o: { readonly anyNode: boolean; readonly guest?: string },
): Promise<FoundDisk[]> {
  const opt = o.guest !== undefined ? { guest: o.guest } : {};
  const blocks = await qmp.execute<
    {
      device?: string;
      qdev?: string;
      inserted?: { 'node-name': string; ro?: boolean; image?: { 'virtual-size'?: number } };
    }[]
  >('query-block');
  const attached: AttachedDisk[] = blocks.flatMap((b) =>
    b.inserted
      ? [
          {
            device: b.device || undefined,
            id: /^\/machine\/peripheral\/([^/]+)/.exec(b.qdev ?? '')?.[1],
            node: b.inserted['node-name'],
            ro: b.inserted.ro === true,
            size: Number(b.inserted.image?.['virtual-size'] ?? NaN),
          },
        ]
      : [],
  );
  let picked: FoundDisk[];
  if (want === 'all') {
    picked = attached
      .filter((a) => !a.ro)
      .map((a) => ({ name: a.device ?? a.id ?? a.node, node: a.node, size: a.size }));
    if (picked.length === 0)
      throw new QuiesceError('CONFIG_MISMATCH', `QEMU (${qmp.address}) has no writable disk`, opt);
  } else {
    type NodeInfo = { 'node-name': string; image?: { 'virtual-size'?: number } };
    let nodes: NodeInfo[] | undefined;
    picked = [];
    for (const sel of want) {
      const a = attached.find((x) => x.node === sel || x.device === sel || x.id === sel);
      if (a) {
        picked.push({ name: sel, node: a.node, size: a.size });
        continue;
      }
      if (o.anyNode) {
        // Any named node can be copied (a format or protocol node below a device, too).
        nodes ??= await qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true });
        const n = nodes.find((x) => x['node-name'] === sel);
        if (n) {
          picked.push({ name: sel, node: sel, size: Number(n.image?.['virtual-size'] ?? NaN) });
          continue;
        }
      }
      const known = attached.map((x) => [x.id ?? x.device, x.node].filter(Boolean).join('/')).join(', ');
      throw new QuiesceError(
        'CONFIG_MISMATCH',
        `QEMU (${qmp.address}) has no ${o.anyNode ? 'device or node' : 'device or top node'} '${sel}' (disks: ${known || 'none'})`,
        opt,
      );
    }
    const nodes2 = picked.map((p) => p.node);
    const dup = nodes2.find((n, i) => nodes2.indexOf(n) !== i);
    if (dup) throw new QuiesceError('CONFIG_MISMATCH', `two of the listed disks are the same node ${dup}`, opt);
  }
  for (const p of picked) {
    if (!Number.isSafeInteger(p.size) || p.size <= 0)
      throw new QuiesceError('QMP_ERROR', `QEMU reports no size for disk ${p.name} (node ${p.node})`, opt);
  }
  return picked;
}

/**
 * Gives each disk its target (`target` with {disk} filled) and this run's
 * name prefix; refuses two disks written to one file.
 */
export function nameDisks(found: readonly FoundDisk[], target: string, guest: string): Disk[] {
  const tag = randomBytes(3).toString('hex');
  const disks = found.map((d, i) => ({
    ...d,
    target: fillPlaceholders(target, { disk: d.name }),
    base: `qz${tag}-${i}`,
  }));
  const targets = disks.map((d) => d.target);
  const twice = targets.find((t, i) => targets.indexOf(t) !== i);
  if (twice)
    throw new QuiesceError('CONFIG', `two disks would be written to ${twice}: put {disk} in the target`, { guest });
  return disks;
}

/**
 * A node name or job id of this run for `d`. QEMU wants a letter first and
 * at most 31 characters; the random run tag keeps runs (and a previous run's
 * leftovers) apart.
 */
export function runName(d: Disk, role: NameRole): string {
  return `${d.base}-${role}`;
}

/**
 * Creates `d.target` exclusively: an existing file is never overwritten
 * (QEMU's own create would truncate it). With `size` the file is sized to it.
 * `onCreated` hears of the file as soon as it exists, so that a failure after
 * that still gets it removed.
 */
export async function reserveTarget(
  d: Disk,
  o: { readonly size?: number | undefined; readonly guest: string; readonly onCreated: (path: string) => void },
): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await open(d.target, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'EEXIST'
        ? 'it exists already (refusing to overwrite)'
        : code === 'ENOENT'
          ? 'its directory does not exist'
          : (err as Error).message;
    throw new QuiesceError('STEP_FAILED', `cannot create ${d.target} for disk ${d.name}: ${why}`, {
      guest: o.guest,
      cause: err,
    });
  }
  o.onCreated(d.target);
  try {
    if (o.size !== undefined) await fh.truncate(o.size);
  } finally {
    await fh.close();
  }
}
