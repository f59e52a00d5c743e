import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuStats } from '../../../agent/src/system/cpu-stats.js';
import { diskStats } from '../../../agent/src/system/disk-stats.js';

describe('/proc/stat and /proc/diskstats as the reference reads them', () => {
  test('cpustats: cpuN lines in milliseconds, members as far as the line goes, the total skipped', () => {
    const out = cpuStats('cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\ncpu1 1 2 3 4\nintr 5\n');
    assert.deepEqual(out, [
      {
        type: 'linux',
        cpu: 0,
        ...{ user: 10n, nice: 20n, system: 30n, idle: 40n, iowait: 50n, irq: 60n, softirq: 70n },
        ...{ steal: 80n, guest: 90n, guestnice: 100n },
      },
      {
        type: 'linux',
        cpu: 1,
        ...{ user: 10n, nice: 20n, system: 30n, idle: 40n, iowait: undefined, irq: undefined, softirq: undefined },
        ...{ steal: undefined, guest: undefined, guestnice: undefined },
      },
    ]);
  });

  test('cpustats: a line of fewer than four counters ends the list', () => {
    assert.equal(cpuStats('cpu0 1 2 3 4\ncpu1 1 2 3\ncpu2 1 2 3 4\n').length, 1);
  });

  test('cpustats: six counters report softirq from what the previous line left, as the reference does', () => {
    const [cpu] = cpuStats('cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6\n') as { softirq: bigint }[];
    assert.equal(cpu!.softirq, 70n);
  });

  test('diskstats: the 4-counter partition format, empty stats for 5 to 10 counters, the full formats', () => {
    const out = diskStats('8 1 sda1 1 2 3 4\n8 2 sda2 1 2 3 4 5\n8 0 sda 1 2 3 4 5 6 7 8 9 10 11\nx\n') as {
      name: string;
      stats: Record<string, bigint | undefined>;
    }[];
    assert.deepEqual(
      out.map((d) => d.name),
      ['sda1', 'sda2', 'sda'],
    );
    const defined = (s: Record<string, bigint | undefined>) =>
      Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined));
    assert.deepEqual(defined(out[0]!.stats), {
      'read-ios': 1n,
      'read-sectors': 2n,
      'write-ios': 3n,
      'write-sectors': 4n,
    });
    assert.deepEqual(defined(out[1]!.stats), {});
    assert.equal(out[2]!.stats['weight-ticks'], 11n);
    assert.equal(out[2]!.stats['discard-ios'], undefined);
  });
});
