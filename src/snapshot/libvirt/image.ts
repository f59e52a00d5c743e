import { open as openFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { QuiesceError } from '../../errors.js';
import type { PickedDisk } from './domain-xml.js';
import { writeQcow2 } from './qcow2.js';
import type { LibvirtSession } from './session.js';

export type ImageSpec =
  | { readonly format: 'raw' }
  | {
      readonly format: 'qcow2';
      /** log2 of the cluster size (default 16: 64 KiB). */
      readonly clusterBits?: number;
      /** The image under this one; `mustExist`: checked before the image is made (a chain's parent). */
      readonly backing?: { readonly file: string; readonly format: string; readonly mustExist?: boolean };
    };

/**
 * Creates the picked disk's target, an image libvirt is then given to reuse
 * (backup targets with REUSE_EXTERNAL, overlays with REUSE_EXT), before the
 * freeze: libvirt's own creation (a blockdev-create job) would run inside the
 * window. It has the disk's size (asked of libvirt). The file is created
 * exclusively, never over an existing one, mode 0600; a raw image is sparse,
 * a qcow2 is written here (qcow2.ts: no qemu-img process).
 * `created` is called as soon as the file exists, so that a failure after it
 * still removes the file.
 */
export async function createImage(
  session: LibvirtSession,
  p: PickedDisk,
  spec: ImageSpec,
  created: () => void,
): Promise<void> {
  const timeoutMs = session.s.commandTimeoutMs;
  const { capacity } = await session.conn.getBlockInfo(session.dom, p.disk.name, 0, { timeoutMs });
  const fail = (what: string, err: Error): never => {
    throw new QuiesceError('STEP_FAILED', `${what}: ${err.message}`, { guest: session.guest, cause: err });
  };
  // A relative backing file name is relative to the image's own folder (as QEMU reads it).
  if (spec.format === 'qcow2' && spec.backing?.mustExist)
    await stat(resolve(dirname(p.target), spec.backing.file)).catch((err: Error) =>
      fail(`the backing file of ${p.target} for disk ${p.disk.name}`, err),
    );
  const fh = await openFile(p.target, 'wx', 0o600).catch((err: Error) =>
    fail(`cannot create ${p.target} for disk ${p.disk.name}`, err),
  );
  created();
  try {
    if (spec.format === 'raw') await fh.truncate(Number(capacity));
    else
      await writeQcow2(fh, {
        size: Number(capacity),
        ...(spec.clusterBits !== undefined ? { clusterBits: spec.clusterBits } : {}),
        ...(spec.backing ? { backing: spec.backing } : {}),
      }).catch((err: Error) => fail(`cannot write the qcow2 image ${p.target}`, err));
  } finally {
    await fh.close();
  }
}
