/**
 * Freeze and thaw latency: guest-fsfreeze-freeze-list of three loop mounts
 * (ext4, xfs, btrfs) then guest-fsfreeze-thaw, each timed from the request
 * written to the reply read on a raw socket. quiesce-agent and qemu-ga run in
 * the same process run, in interleaved rounds, on the same mounts; qemu-ga is
 * only ever sent freeze-list with those mounts. Prints p50/p99 per agent and
 * the ratio quiesce/qemu-ga. Needs root.
 *
 *   node --import tsx bench/freeze.ts          (BENCH_N=cycles per agent, default 3000)
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../test/helpers/agents.js';
import {
  createLoopMount,
  destroyLoopMount,
  startMountNamespace,
  startRootThawGuard,
  type LoopMount,
} from '../test/helpers/loop-mounts.js';

const N = Number(process.env['BENCH_N'] ?? 3000);
const ROUNDS = 10;

const pct = (xs: number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

/** One request at a time: write it, time until its reply line. */
class Timed {
  private buf = '';
  private wake: (() => void) | undefined;

  constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.wake?.();
    });
  }

  async call(request: string): Promise<{ ms: number; reply: string }> {
    const t0 = process.hrtime.bigint();
    this.socket.write(request);
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl >= 0) {
        const reply = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        return { ms: Number(process.hrtime.bigint() - t0) / 1e6, reply };
      }
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

interface Side {
  kind: AgentKind;
  agent: RunningAgent;
  socket: Socket;
  timed: Timed;
  freeze: number[];
  thaw: number[];
}

if (process.getuid?.() !== 0) {
  console.log('bench/freeze: needs root (loop mounts, FIFREEZE); skipped');
  process.exit(0);
}

const guard = startRootThawGuard();
// A private mount namespace: no other qemu-ga on the machine sees (and thaws) these mounts mid-run.
const ns = startMountNamespace();
const mounts: LoopMount[] = [];
const sides: Side[] = [];
try {
  for (const t of ['ext4', 'xfs', 'btrfs'] as const) mounts.push(createLoopMount(t, ns));
  const mnts = mounts.map((m) => m.mnt);
  const freeze = JSON.stringify({ execute: 'guest-fsfreeze-freeze-list', arguments: { mountpoints: mnts } });
  const thaw = '{"execute":"guest-fsfreeze-thaw"}';
  const kinds: AgentKind[] = haveQemuGa() ? ['quiesce', 'qemu-ga'] : ['quiesce'];
  for (const kind of kinds) {
    const args = kind === 'quiesce' ? [`--fsfreeze-include=${mnts.join(',')}`] : [];
    const agent = await startAgent(kind, { args, wrap: ns.wrap });
    const socket = connect(agent.socket);
    await once(socket, 'connect');
    sides.push({ kind, agent, socket, timed: new Timed(socket), freeze: [], thaw: [] });
  }
  const cycle = async (s: Side, record: boolean): Promise<void> => {
    const f = await s.timed.call(freeze);
    const h = await s.timed.call(thaw);
    if (f.reply !== '{"return": 3}') throw new Error(`${s.kind} freeze: ${f.reply}`);
    if (!/^\{"return": \d+\}$/.test(h.reply)) throw new Error(`${s.kind} thaw: ${h.reply}`);
    if (record) {
      s.freeze.push(f.ms);
      s.thaw.push(h.ms);
    }
  };
  for (const s of sides) for (let i = 0; i < 200; i++) await cycle(s, false);
  for (let round = 0; round < ROUNDS; round++) {
    for (const s of sides) for (let i = 0; i < N / ROUNDS; i++) await cycle(s, true);
  }
  const f = (x: number): string => x.toFixed(3);
  console.log(
    `freeze-list + thaw of ext4, xfs and btrfs loop mounts: ${N} cycles per agent, ${ROUNDS} interleaved rounds`,
  );
  for (const s of sides) {
    console.log(
      `${s.kind.padEnd(8)} freeze p50 ${f(pct(s.freeze, 50))} ms p99 ${f(pct(s.freeze, 99))} ms | ` +
        `thaw p50 ${f(pct(s.thaw, 50))} ms p99 ${f(pct(s.thaw, 99))} ms`,
    );
  }
  const [ours, ref] = sides;
  if (ours && ref) {
    const ratio = (a: number[], b: number[]): string => (pct(a, 50) / pct(b, 50)).toFixed(2);
    console.log(
      `ratio quiesce/qemu-ga p50: freeze ${ratio(ours.freeze, ref.freeze)}, thaw ${ratio(ours.thaw, ref.thaw)}, ` +
        `freeze+thaw ${((pct(ours.freeze, 50) + pct(ours.thaw, 50)) / (pct(ref.freeze, 50) + pct(ref.thaw, 50))).toFixed(2)}`,
    );
  }
} finally {
  for (const s of sides) {
    s.socket.destroy();
    await s.agent.stop();
  }
  for (const m of mounts) destroyLoopMount(m);
  ns.stop();
  guard.stop();
}
