import { execFile } from 'node:child_process';
import { open as openFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { QuiesceError } from '../../errors.js';
import type { PickedDisk } from './domain-xml.js';
import type { LibvirtSession } from './session.js';

export interface ImageSpec {
  readonly format: 'raw' | 'qcow2';
  /** qemu-img create's options for a qcow2 (cluster size, backing file). */
  readonly qcow2Options?: readonly string[];
}

/**
 * Creates the picked disk's target, an image libvirt is then given to reuse
 * (backup targets with REUSE_EXTERNAL, overlays with REUSE_EXT), before the
 * freeze: libvirt's own creation (a blockdev-create job) would run inside the
 * window. It has the disk's size (asked of libvirt). The file is created
 * exclusively, never over an existing one, mode 0600; a raw image is sparse,
 * a qcow2 is made by qemu-img over it. `created` is called as soon as the file
 * exists, so that a failure after it still removes the file.
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
  const fh = await openFile(p.target, 'wx', 0o600).catch((err: Error) =>
    fail(`cannot create ${p.target} for disk ${p.disk.name}`, err),
  );
  created();
  try {
    if (spec.format === 'raw') await fh.truncate(Number(capacity));
  } finally {
    await fh.close();
  }
  if (spec.format === 'qcow2')
    await promisify(execFile)(
      'qemu-img',
      ['create', '-q', '-f', 'qcow2', ...(spec.qcow2Options ?? []), p.target, String(capacity)],
      { timeout: timeoutMs },
    ).catch((err: Error) => fail(`qemu-img create of ${p.target} failed`, err));
}
