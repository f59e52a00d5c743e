import { execFile } from 'node:child_process';
import { open as openFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { QuiesceError } from '../../errors.js';

export interface ImageSpec {
  readonly format: 'raw' | 'qcow2';
  /** The disk's size in bytes. */
  readonly capacity: bigint;
  /** qemu-img create's options for a qcow2 (cluster size, backing file). */
  readonly qcow2Options?: readonly string[];
  /** For messages: the disk the image is for, and the guest. */
  readonly disk: string;
  readonly guest: string;
  /** Bounds qemu-img. */
  readonly timeoutMs: number;
}

/**
 * Creates an image libvirt is then given to reuse (backup targets with
 * REUSE_EXTERNAL, overlays with REUSE_EXT), before the freeze: libvirt's own
 * creation (a blockdev-create job) would run inside the window. The file is
 * created exclusively, never over an existing one, mode 0600; a raw image is
 * sparse at the disk's size, a qcow2 is made by qemu-img over it. `created`
 * is called as soon as the file exists, so that a failure after it still
 * removes the file.
 */
export async function createImage(target: string, spec: ImageSpec, created: () => void): Promise<void> {
  const fh = await openFile(target, 'wx', 0o600).catch((err: NodeJS.ErrnoException) => {
    throw new QuiesceError('STEP_FAILED', `cannot create ${target} for disk ${spec.disk}: ${err.message}`, {
      guest: spec.guest,
      cause: err,
    });
  });
  created();
  try {
    if (spec.format === 'raw') await fh.truncate(Number(spec.capacity));
  } finally {
    await fh.close();
  }
  if (spec.format === 'qcow2')
    await promisify(execFile)(
      'qemu-img',
      ['create', '-q', '-f', 'qcow2', ...(spec.qcow2Options ?? []), target, String(spec.capacity)],
      { timeout: spec.timeoutMs },
    ).catch((err: Error) => {
      throw new QuiesceError('STEP_FAILED', `qemu-img create of ${target} failed: ${err.message}`, {
        guest: spec.guest,
        cause: err,
      });
    });
}
