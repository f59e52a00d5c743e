// 10,000 freeze/thaw cycles over the socket against loop mounts of the test's own: every cycle
// counts right, and the agent leaks neither descriptors nor memory.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { startAgent, type RunningAgent } from '../../helpers/agents.js';
import { loopMountSkipReason, useLoopMounts, writeCompletes } from '../../helpers/loop-mounts.js';

const SKIP = loopMountSkipReason(['ext4', 'xfs', 'btrfs']);
const CYCLES = Number(process.env['QUIESCE_SOAK_CYCLES'] ?? 10_000);
const WARMUP = 1000;

const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const rssKiB = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

/** One request at a time on a raw socket: send, read one reply line. */
class Line {
  private buf = '';
  private wake: (() => void) | undefined;

  constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.wake?.();
    });
  }

  async call(request: string): Promise<string> {
    this.socket.write(request);
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        return line;
      }
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

describe('fsfreeze soak', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4', 'xfs', 'btrfs']);

  test(
    `${CYCLES} freeze/thaw cycles: right counts, no descriptor leak, RSS growth under 5 MB`,
    { timeout: 300_000 },
    async (t) => {
      const mnts = mounts.map((m) => m.mnt);
      const agent: RunningAgent = await startAgent('quiesce', {
        args: [`--fsfreeze-include=${mnts.join(',')}`],
        wrap: mounts[0]!.wrap,
      });
      const socket = connect(agent.socket);
      try {
        await once(socket, 'connect');
        const line = new Line(socket);
        const freeze = JSON.stringify({ execute: 'guest-fsfreeze-freeze-list', arguments: { mountpoints: mnts } });
        const thaw = '{"execute":"guest-fsfreeze-thaw"}';
        const pid = agent.child.pid!;
        let fdsAfterWarmup = 0;
        let rssAfterWarmup = 0;
        let maxRss = 0;
        const t0 = Date.now();
        for (let i = 0; i < CYCLES; i++) {
          const f = await line.call(freeze);
          const h = await line.call(thaw);
          if (f !== '{"return": 3}' || h !== '{"return": 3}') assert.fail(`cycle ${i}: freeze ${f}, thaw ${h}`);
          if (i === WARMUP) {
            fdsAfterWarmup = fds(pid);
            rssAfterWarmup = rssKiB(pid);
          }
          if (i > WARMUP && i % 1000 === 0) maxRss = Math.max(maxRss, rssKiB(pid));
        }
        const took = Date.now() - t0;
        const fdsEnd = fds(pid);
        const rssEnd = rssKiB(pid);
        maxRss = Math.max(maxRss, rssEnd);
        t.diagnostic(
          `${CYCLES} cycles in ${(took / 1000).toFixed(1)} s (${(took / CYCLES).toFixed(2)} ms/cycle); fds ${fdsAfterWarmup} → ${fdsEnd}; ` +
            `RSS ${rssAfterWarmup} → ${rssEnd} KiB (max ${maxRss})`,
        );
        assert.equal(fdsEnd, fdsAfterWarmup, 'open descriptors');
        assert.ok(maxRss - rssAfterWarmup < 5 * 1024, `RSS grew ${maxRss - rssAfterWarmup} KiB`);
        assert.equal(await line.call('{"execute":"guest-fsfreeze-status"}'), '{"return": "thawed"}');
        for (const m of mounts) assert.equal(await writeCompletes(m, 3000), true, m.mnt);
      } finally {
        socket.destroy();
        await agent.stop();
      }
    },
  );
});
