import { readFileSync } from 'node:fs';
import { errorText } from '../errno.js';
import { cStringToText, type JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import { lines, scan, type Conversion } from './c-parse.js';

export const PROC_DISKSTATS = '/proc/diskstats';

// "%u %u %s" then the counters: %lu for I/O and sector counts, %u for the tick fields.
const FORMAT: readonly Conversion[] = [
  'u', 'u', 's',
  'lu', 'lu', 'lu', 'lu', 'lu', 'lu', 'lu', 'u', 'u', 'u', 'u',
  'lu', 'lu', 'lu', 'u',
  'lu', 'u',
]; // prettier-ignore

/**
 * guest-get-diskstats: one entry per /proc/diskstats line with at least 4
 * counters. The old 4-counter partition format, the 11-counter format and the
 * discard (4.18) and flush (5.5) extensions fill what they have; a line with
 * 5 to 10 counters gets an empty stats object, as in the reference.
 */
export function diskStats(text: string): JsonOut[] {
  const out: JsonOut[] = [];
  for (const line of lines(text)) {
    const { count: i, values } = scan(line, FORMAT);
    if (i < 7) continue;
    const [major, minor, name, a, b, c, d, wrIos, wrMerges, wrSec, wrTicks, iosPgr, totTicks, rqTicks] = values as [
      bigint,
      bigint,
      string,
      ...bigint[],
    ];
    const [dcIos, dcMerges, dcSec, dcTicks, flIos, flTicks] = values.slice(14) as bigint[];
    const full = i >= 14;
    const old = i === 7;
    // Members in the schema's order: the writer's order depends on it.
    const stats: Record<string, bigint | undefined> = {
      'read-sectors': full ? c : old ? b : undefined,
      'read-ios': full || old ? a : undefined,
      'read-merges': full ? b : undefined,
      'write-sectors': full ? wrSec : old ? d : undefined,
      'write-ios': full ? wrIos : old ? c : undefined,
      'write-merges': full ? wrMerges : undefined,
      'discard-sectors': i >= 18 ? dcSec : undefined,
      'discard-ios': i >= 18 ? dcIos : undefined,
      'discard-merges': i >= 18 ? dcMerges : undefined,
      'flush-ios': i >= 20 ? flIos : undefined,
      'read-ticks': full ? d : undefined,
      'write-ticks': full ? wrTicks : undefined,
      'discard-ticks': i >= 18 ? dcTicks : undefined,
      'flush-ticks': i >= 20 ? flTicks : undefined,
      'ios-pgr': full ? iosPgr : undefined,
      'total-ticks': full ? totTicks : undefined,
      'weight-ticks': full ? rqTicks : undefined,
    };
    out.push({ name: cStringToText(Buffer.from(name, 'latin1')), major, minor, stats });
  }
  return out;
}

export function readDiskStats(path = PROC_DISKSTATS): JsonOut[] {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    throw new QgaError(`open("${path}"): ${errorText(err)}`);
  }
  return diskStats(text);
}
