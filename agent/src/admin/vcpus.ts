import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';
import { errorText } from '../errno.js';
import { QgaError } from '../qapi/errors.js';
import { checkDirectory } from '../system/sysfs.js';
import { CPU_DIR } from '../system/vcpus.js';

/** One element of guest-set-vcpus (can-offline is accepted and ignored, as by the reference). */
export interface VcpuRequest {
  readonly logicalId: bigint;
  readonly online: boolean;
}

/**
 * Brings one CPU to the requested state through its `online` attribute:
 * read one byte, and write '0' or '1' only when it differs. A CPU without
 * the attribute (cpu0 on x86) is always online: asking for that succeeds,
 * asking to offline it fails.
 */
function transferVcpu(vcpu: VcpuRequest, cpuDir: string): void {
  const dirpath = `${cpuDir}/cpu${vcpu.logicalId}/`;
  checkDirectoryOrThrow(dirpath);
  // The reference prints "%s/%s" with a dirpath that already ends in '/'.
  const online = `${dirpath}/online`;
  let fd: number;
  try {
    fd = openSync(online, constants.O_RDWR);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new QgaError(`open("${online}"): ${errorText(err)}`);
    if (!vcpu.online) throw new QgaError(`logical processor #${vcpu.logicalId} can't be offlined`);
    return;
  }
  try {
    const status = Buffer.alloc(1);
    let n: number;
    try {
      n = readSync(fd, status, 0, 1, 0);
    } catch (err) {
      throw new QgaError(`pread("${online}"): ${errorText(err)}`);
    }
    if (n === 0) throw new QgaError(`pread("${online}"): unexpected EOF`);
    if (vcpu.online !== (status[0] !== 0x30)) {
      try {
        writeSync(fd, Buffer.from(vcpu.online ? '1' : '0'), 0, 1, 0);
      } catch (err) {
        throw new QgaError(`pwrite("${online}"): ${errorText(err)}`);
      }
    }
  } finally {
    closeSync(fd);
  }
}

function checkDirectoryOrThrow(path: string): void {
  try {
    checkDirectory(path);
  } catch (err) {
    throw new QgaError((err as Error).message);
  }
}

/**
 * guest-set-vcpus: the CPUs in request order until the first failure. The
 * reply is how many were done; the failure is the reply only when none was.
 */
export function setVcpus(vcpus: readonly VcpuRequest[], cpuDir = CPU_DIR): bigint {
  let processed = 0n;
  for (const vcpu of vcpus) {
    try {
      transferVcpu(vcpu, cpuDir);
    } catch (err) {
      if (processed === 0n) throw err;
      break;
    }
    processed++;
  }
  return processed;
}
