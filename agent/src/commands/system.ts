import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { strerror } from '../errno.js';
import { cStringToText } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import type { CommandDef, CommandFamily } from '../qapi/types.js';
import { readCpuStats } from '../system/cpu-stats.js';
import { readDiskStats } from '../system/disk-stats.js';
import { getDisks } from '../system/disks.js';
import { getMemoryBlockInfo, getMemoryBlocks } from '../system/memory-blocks.js';
import { getOsInfo } from '../system/os-info.js';
import { getTimezone } from '../system/timezone.js';
import { getUsers } from '../system/utmp.js';
import { getVcpus } from '../system/vcpus.js';

/**
 * gettimeofday() in nanoseconds (a multiple of 1000, as the reference's).
 * Date.now() has milliseconds only; the performance clock adds the
 * microseconds while it still agrees with the wall clock to within 1 ms (it
 * is monotonic, so a stepped or slewed wall clock leaves it behind).
 */
export function wallClockNs(): bigint {
  const ms = Date.now();
  const precise = performance.timeOrigin + performance.now();
  const us = Math.abs(precise - ms) < 1 ? Math.floor(precise * 1000) : ms * 1000;
  return BigInt(us) * 1000n;
}

/** HOST_NAME_MAX: gethostname() into a buffer this long fails for a name that fills it. */
const HOST_NAME_MAX = 64;

/**
 * gethostname() as the reference calls it. The kernel's bytes come from
 * /proc/sys/kernel/hostname (this UTS namespace's), so that odd bytes reach
 * the JSON writer as the reference's do; os.hostname() is the fallback.
 */
export function hostName(): string {
  let raw: Buffer;
  try {
    raw = readFileSync('/proc/sys/kernel/hostname');
    if (raw.at(-1) === 0x0a) raw = raw.subarray(0, -1);
  } catch {
    raw = Buffer.from(hostname());
  }
  if (raw.length >= HOST_NAME_MAX) throw new QgaError(`cannot get hostname: ${strerror('ENAMETOOLONG')}`);
  return cStringToText(raw);
}

/**
 * The read-only system queries of qemu-ga 7.2 on Linux, in groups that the
 * registration puts where the reference registers them (guest-info lists
 * commands in registration order, newest first).
 */
export interface SystemFamilies {
  /** guest-get-time: registered between guest-ping and guest-info. */
  readonly time: CommandDef;
  /** guest-get-vcpus and guest-get-disks: after guest-network-get-interfaces, before guest-get-fsinfo. */
  readonly cpusAndDisks: CommandFamily;
  /** guest-get-memory-blocks and guest-get-memory-block-info: after guest-get-fsinfo. */
  readonly memory: CommandFamily;
  /** guest-get-host-name, -users, -timezone, -osinfo and the unsupported guest-get-devices. */
  readonly info: CommandFamily;
  /** guest-get-diskstats and guest-get-cpustats: the last two the reference registers. */
  readonly stats: CommandFamily;
}

export function systemCommands(): SystemFamilies {
  return {
    time: { name: 'guest-get-time', run: () => wallClockNs() },
    cpusAndDisks: {
      commands: [
        { name: 'guest-get-vcpus', run: () => getVcpus() },
        { name: 'guest-get-disks', run: () => getDisks() },
      ],
    },
    memory: {
      commands: [
        { name: 'guest-get-memory-blocks', run: () => getMemoryBlocks() },
        { name: 'guest-get-memory-block-info', run: () => getMemoryBlockInfo() },
      ],
    },
    info: {
      commands: [
        { name: 'guest-get-host-name', run: () => ({ 'host-name': hostName() }) },
        { name: 'guest-get-users', run: () => getUsers() },
        { name: 'guest-get-timezone', run: () => getTimezone() },
        { name: 'guest-get-osinfo', run: () => getOsInfo() },
        {
          name: 'guest-get-devices',
          // Listed but disabled on Linux: the dispatcher answers "has been disabled" before this runs.
          unsupported: true,
          run: () => {
            throw new QgaError('this feature or command is not currently supported');
          },
        },
      ],
    },
    stats: {
      commands: [
        { name: 'guest-get-diskstats', run: () => readDiskStats() },
        { name: 'guest-get-cpustats', run: () => readCpuStats() },
      ],
    },
  };
}
