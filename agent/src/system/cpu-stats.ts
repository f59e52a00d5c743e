import { readFileSync } from 'node:fs';
import { errorText } from '../errno.js';
import type { JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import { atoi, lines, scan, type Conversion } from './c-parse.js';

export const PROC_STAT = '/proc/stat';

/**
 * sysconf(_SC_CLK_TCK): the kernel's USER_HZ, which glibc takes from the
 * auxiliary vector. It is 100 on every Linux architecture qemu-ga runs on.
 */
export const CLK_TCK = 100n;

const FORMAT: readonly Conversion[] = ['s', 'lu', 'lu', 'lu', 'lu', 'lu', 'lu', 'lu', 'lu', 'lu', 'lu'];

/** unsigned long arithmetic: ticks * 1000 / CLK_TCK, wrapping like C. */
const ms = (ticks: bigint): bigint => BigInt.asUintN(64, ticks * 1000n) / CLK_TCK;

/**
 * guest-get-cpustats: one GuestCpuStats (type linux) per "cpuN" line of
 * /proc/stat, times in milliseconds; members a short line lacks are left out,
 * and a line of fewer than four counters ends the list, as the reference does.
 */
export function cpuStats(text: string): JsonOut[] {
  const out: JsonOut[] = [];
  // The reference's counters are locals that sscanf fills only as far as a line goes: with 6
  // counters it reports softirq anyway, whatever an earlier line (the "cpu" total) left there.
  const counters: bigint[] = new Array<bigint>(10).fill(0n);
  for (const line of lines(text)) {
    const { count, values } = scan(line, FORMAT);
    for (const [i, v] of values.slice(1).entries()) counters[i] = v as bigint;
    const name = values[0] as string | undefined;
    // Only "cpuN" lines: not the "cpu" total, not intr, ctxt, …
    if (count === -1 || name === undefined || !name.startsWith('cpu') || name.length === 3) continue;
    if (count < 5) break;
    const [user, nice, system, idle, iowait, irq, softirq, steal, guest, guestnice] = counters;
    // Members in the schema's order (the union's base first): the writer's order depends on it.
    out.push({
      type: 'linux',
      cpu: atoi(name.slice(3)),
      user: ms(user!),
      nice: ms(nice!),
      system: ms(system!),
      idle: ms(idle!),
      iowait: count > 5 ? ms(iowait!) : undefined,
      irq: count > 6 ? ms(irq!) : undefined,
      softirq: count > 6 ? ms(softirq!) : undefined,
      steal: count > 8 ? ms(steal!) : undefined,
      guest: count > 9 ? ms(guest!) : undefined,
      guestnice: count > 10 ? ms(guestnice!) : undefined,
    });
  }
  return out;
}

export function readCpuStats(path = PROC_STAT): JsonOut[] {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    throw new QgaError(`open("${path}"): ${errorText(err)}`);
  }
  return cpuStats(text);
}
