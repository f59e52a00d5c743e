import type { FileHandle } from 'node:fs/promises';

/**
 * An empty qcow2 image (version 3), written without a qemu-img process: the
 * header, the backing file's name and format, one refcount table, one refcount
 * block and a zeroed L1 table, in that order, one cluster each (the L1 table
 * as many as it needs). Every guest cluster is unallocated: reads come from
 * the backing file, or are zeros without one. Layout and fields follow QEMU's
 * qcow2 specification (docs/interop/qcow2.txt); `qemu-img check` and
 * `qemu-img info` read the result as they read qemu-img's own.
 */
export interface Qcow2Spec {
  /** The virtual disk size in bytes (a multiple of 512). */
  readonly size: number;
  /** log2 of the cluster size: 16 (64 KiB, qemu-img's default) or 14 (16 KiB). */
  readonly clusterBits?: number;
  readonly backing?: { readonly file: string; readonly format: string };
}

const MAGIC = 0x514649fb;
const HEADER_LENGTH = 112;
const EXT_BACKING_FORMAT = 0xe2792aca;
/** The qcow2 specification's limit on the backing file's name. */
const MAX_BACKING_NAME = 1023;
/** 16-bit refcounts, qemu-img's default. */
const REFCOUNT_ORDER = 4;

export function qcow2Image(spec: Qcow2Spec): Buffer {
  const bits = spec.clusterBits ?? 16;
  if (bits !== 14 && bits !== 16) throw new RangeError(`cluster bits ${bits}: 14 or 16`);
  if (!Number.isSafeInteger(spec.size) || spec.size <= 0 || spec.size % 512 !== 0)
    throw new RangeError(`image size ${spec.size}: a positive multiple of 512`);
  const cluster = 2 ** bits;
  const l2Entries = cluster / 8;
  const l1Size = Math.ceil(spec.size / (cluster * l2Entries));
  const l1Clusters = Math.ceil((l1Size * 8) / cluster);
  // Clusters 0 (header), 1 (refcount table), 2 (refcount block), then the L1 table.
  const used = 3 + l1Clusters;
  if (used > cluster / 2) throw new RangeError(`image size ${spec.size}: too large for one refcount block`);

  const name = spec.backing ? Buffer.from(spec.backing.file) : undefined;
  const format = spec.backing ? Buffer.from(spec.backing.format) : undefined;
  if (name && (name.length === 0 || name.length > MAX_BACKING_NAME))
    throw new RangeError(`backing file name of ${name.length} bytes: 1 to ${MAX_BACKING_NAME}`);
  const pad8 = (n: number): number => Math.ceil(n / 8) * 8;
  const extensions = format ? 8 + pad8(format.length) : 0;
  const nameOffset = HEADER_LENGTH + extensions + 8; // after the end-of-extensions marker
  if (nameOffset + (name?.length ?? 0) > cluster) throw new RangeError('the header does not fit one cluster');

  const l1Offset = 3 * cluster;
  const image = Buffer.alloc(l1Offset + l1Size * 8);
  image.writeUInt32BE(MAGIC, 0);
  image.writeUInt32BE(3, 4); // version
  if (name) {
    image.writeBigUInt64BE(BigInt(nameOffset), 8);
    image.writeUInt32BE(name.length, 16);
  }
  image.writeUInt32BE(bits, 20);
  image.writeBigUInt64BE(BigInt(spec.size), 24);
  // 32: no encryption
  image.writeUInt32BE(l1Size, 36);
  image.writeBigUInt64BE(BigInt(l1Offset), 40);
  image.writeBigUInt64BE(BigInt(cluster), 48); // refcount table
  image.writeUInt32BE(1, 56); // its clusters
  // 60, 64: no snapshots; 72, 80, 88: no incompatible, compatible or autoclear features
  image.writeUInt32BE(REFCOUNT_ORDER, 96);
  image.writeUInt32BE(HEADER_LENGTH, 100);
  // 104: compression type zlib, then padding to 112
  let at = HEADER_LENGTH;
  if (format) {
    image.writeUInt32BE(EXT_BACKING_FORMAT, at);
    image.writeUInt32BE(format.length, at + 4);
    format.copy(image, at + 8);
    at += extensions;
  }
  at += 8; // end of the extensions: type 0, length 0
  name?.copy(image, at);

  image.writeBigUInt64BE(BigInt(2 * cluster), cluster); // the refcount table's one block
  for (let c = 0; c < used; c++) image.writeUInt16BE(1, 2 * cluster + 2 * c);
  return image;
}

/** Writes the image into a new, empty file. */
export async function writeQcow2(fh: FileHandle, spec: Qcow2Spec): Promise<void> {
  const image = qcow2Image(spec);
  const { bytesWritten } = await fh.write(image, 0, image.length, 0);
  if (bytesWritten !== image.length) throw new Error(`short write: ${bytesWritten} of ${image.length} bytes`);
}
