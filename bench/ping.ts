/**
 * guest-ping round trip and idle memory, quiesce-agent against qemu-ga, in
 * one run: both in unix-listen mode, one raw client each (a write, then wait
 * for the reply line), measured in interleaved batches so that machine noise
 * hits both alike. Two phases:
 *   cold: the first BENCH_COLD pings after start-up (our JIT is still cold;
 *         in a guest, where requests are rare, this is what a host sees),
 *   warm: BENCH_N pings after BENCH_WARMUP more (steady state).
 * Prints p50/p99 per agent and phase, the ratios ours/reference, and each
 * process's VmRSS after start-up and a few requests (idle) and after the run.
 *
 * Targets: warm ping p50 ratio <= 1.0, our idle RSS <= 50 MB.
 * Defaults: BENCH_COLD 300, BENCH_WARMUP 2000, BENCH_N 2000.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../test/helpers/agents.js';

const N = Number(process.env['BENCH_N'] ?? 2000);
const WARMUP = Number(process.env['BENCH_WARMUP'] ?? 2000);
const COLD = Number(process.env['BENCH_COLD'] ?? 300);
const PING = '{"execute":"guest-ping"}';
const PONG = '{"return": {}}\n';

class PingClient {
  private buf = '';
  private wake: (() => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.wake?.();
    });
  }

  static async open(path: string): Promise<PingClient> {
    const s = connect(path);
    await once(s, 'connect');
    return new PingClient(s);
  }

  /** One round trip, in milliseconds. */
  async ping(): Promise<number> {
    const t0 = process.hrtime.bigint();
    this.socket.write(PING);
    while (!this.buf.includes(PONG)) await new Promise<void>((r) => (this.wake = r));
    const t = Number(process.hrtime.bigint() - t0) / 1e6;
    this.buf = this.buf.slice(this.buf.indexOf(PONG) + PONG.length);
    return t;
  }

  close(): void {
    this.socket.destroy();
  }
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) / 1024;
}

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const kinds: AgentKind[] = haveQemuGa() ? ['quiesce', 'qemu-ga'] : ['quiesce'];
if (kinds.length === 1) console.log('qemu-ga not installed: measuring quiesce-agent alone');

const agents = new Map<AgentKind, RunningAgent>();
const clients = new Map<AgentKind, PingClient>();

/** `n` pings per agent in batches of `batch`, alternating which agent goes first. */
async function measure(n: number, batch: number): Promise<Map<AgentKind, number[]>> {
  const times = new Map<AgentKind, number[]>(kinds.map((k) => [k, []]));
  for (let done = 0; done < n; done += batch) {
    const order = (done / batch) % 2 === 0 ? kinds : [...kinds].reverse();
    for (const k of order) {
      const c = clients.get(k)!;
      const out = times.get(k)!;
      for (let i = 0; i < Math.min(batch, n - done); i++) out.push(await c.ping());
    }
  }
  return times;
}

const f = (x: number): string => x.toFixed(3);
function report(phase: string, times: Map<AgentKind, number[]>): number | undefined {
  for (const k of kinds) {
    const t = times.get(k)!;
    console.log(
      `${phase.padEnd(5)} ${k.padEnd(8)} p50 ${f(pct(t, 50))} ms  p99 ${f(pct(t, 99))} ms  (${t.length} pings)`,
    );
  }
  if (kinds.length < 2) return undefined;
  const [o, r] = [times.get('quiesce')!, times.get('qemu-ga')!];
  const ratio = pct(o, 50) / pct(r, 50);
  console.log(
    `${phase.padEnd(5)} ratio ours/reference: p50 ${ratio.toFixed(2)}  p99 ${(pct(o, 99) / pct(r, 99)).toFixed(2)}`,
  );
  return ratio;
}

try {
  for (const k of kinds) {
    agents.set(k, await startAgent(k));
    clients.set(k, await PingClient.open(agents.get(k)!.socket));
  }
  // Start-up plus a few requests, then a moment of quiet: the idle footprint.
  for (const k of kinds) for (let i = 0; i < 5; i++) await clients.get(k)!.ping();
  await new Promise((r) => setTimeout(r, 1000));
  const idle = new Map(kinds.map((k) => [k, rssMiB(agents.get(k)!.child.pid!)]));

  console.log(`guest-ping round trip: ${COLD} cold, then ${N} warm after ${WARMUP} more, per agent, interleaved`);
  const cold = await measure(COLD, 50);
  await measure(WARMUP, 500);
  const warm = await measure(N, 100);
  report('cold', cold);
  const ratio = report('warm', warm);

  for (const k of kinds) {
    const after = rssMiB(agents.get(k)!.child.pid!);
    console.log(
      `VmRSS ${k.padEnd(8)} idle ${idle.get(k)!.toFixed(1)} MiB (${((idle.get(k)! * 1048576) / 1e6).toFixed(1)} MB), after the run ${after.toFixed(1)} MiB`,
    );
  }
  const ourIdle = (idle.get('quiesce')! * 1048576) / 1e6;
  const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
  if (ratio !== undefined) console.log(`target warm p50 ratio <= 1.00: ${ratio.toFixed(2)} ${verdict(ratio <= 1)}`);
  console.log(`target our idle VmRSS <= 50 MB: ${ourIdle.toFixed(1)} MB ${verdict(ourIdle <= 50)}`);
} finally {
  for (const c of clients.values()) c.close();
  for (const a of agents.values()) await a.stop();
}
