import { errorText } from '../errno.js';
import type { JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import { strtol } from './c-parse.js';
import { checkDirectory, listDirectory, preadFile, SysError } from './sysfs.js';

export const CPU_DIR = '/sys/devices/system/cpu';

/**
 * guest-get-vcpus: every entry of /sys/devices/system/cpu that scans as
 * "cpu<n>", in directory order. A CPU without an `online` file (cpu0 on
 * x86) is online and cannot be offlined; otherwise its first byte decides.
 * The first failure ends the walk and is the reply.
 */
export function getVcpus(cpuDir = CPU_DIR): JsonOut[] {
  let names: string[];
  try {
    names = listDirectory(cpuDir).map((e) => e.name);
  } catch (err) {
    throw new QgaError(`failed to list entries: ${cpuDir}: ${errorText(err)}`);
  }
  const out: JsonOut[] = [];
  for (const name of names) {
    // sscanf(name, "cpu%ld"): a match of "cpu" and a number (cpufreq, cpuidle do not scan).
    const m = /^cpu([ \t\n\v\f\r]*[+-]?\d)/.exec(name);
    if (!m) continue;
    const id = strtol(name.slice(3));
    const dirpath = `${cpuDir}/cpu${id}/`;
    const online = `${dirpath}/online`;
    try {
      checkDirectory(dirpath);
      let status: Buffer;
      try {
        status = preadFile(online, 1, `open("${online}")`, `pread("${online}")`);
      } catch (err) {
        if (err instanceof SysError && err.code === 'ENOENT' && err.message.startsWith('open(')) {
          out.push({ 'logical-id': id, online: true, 'can-offline': false });
          continue;
        }
        throw err;
      }
      out.push({ 'logical-id': id, online: status[0] !== 0x30, 'can-offline': true });
    } catch (err) {
      throw new QgaError(err instanceof Error ? err.message : String(err));
    }
  }
  return out;
}
