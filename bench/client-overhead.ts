/**
 * Host client overhead: guest-ping through StreamAgentClient against the same
 * ping written and read by hand on a raw socket, on the same agent; plus the
 * handshake (connect + 0xFF + guest-sync-delimited) time. Runs against
 * quiesce-agent and qemu-ga. Prints p50/p99 and the ratio client/raw.
 */
import { connect } from 'node:net';
import { once } from 'node:events';
import { StreamAgentClient } from '../src/guest/stream-client.js';
import { openSocket } from '../src/guest/connectors/socket.js';
import { haveQemuGa, startAgent, type AgentKind } from '../test/helpers/agents.js';

const N = Number(process.env['BENCH_N'] ?? 3000);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function rawPings(path: string, n: number): Promise<number[]> {
  const socket = connect(path);
  await once(socket, 'connect');
  socket.setNoDelay(true);
  const reply = '{"return": {}}\n';
  let buf = '';
  let wake: (() => void) | undefined;
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    wake?.();
  });
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    socket.write('{"execute":"guest-ping"}');
    while (!buf.includes(reply)) await new Promise<void>((r) => (wake = r));
    buf = buf.slice(buf.indexOf(reply) + reply.length);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  socket.destroy();
  return times;
}

async function clientPings(path: string, n: number): Promise<number[]> {
  const c = new StreamAgentClient({ address: path, open: () => openSocket({ path }) });
  await c.connect();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await c.execute('guest-ping');
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await c.close();
  return times;
}

async function handshakes(path: string, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const c = new StreamAgentClient({ address: path, open: () => openSocket({ path }) });
    await c.connect();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await c.close();
  }
  return times;
}

const kinds: AgentKind[] = haveQemuGa() ? ['quiesce', 'qemu-ga'] : ['quiesce'];
console.log(`client overhead: ${N} guest-ping per mode, interleaved in 10 rounds`);
for (const kind of kinds) {
  const agent = await startAgent(kind);
  try {
    await rawPings(agent.socket, 200);
    await clientPings(agent.socket, 200);
    const raw: number[] = [];
    const cli: number[] = [];
    for (let round = 0; round < 10; round++) {
      raw.push(...(await rawPings(agent.socket, N / 10)));
      cli.push(...(await clientPings(agent.socket, N / 10)));
    }
    const hs = await handshakes(agent.socket, 200);
    const f = (x: number) => x.toFixed(3);
    console.log(
      `${kind.padEnd(8)} raw p50 ${f(pct(raw, 50))} ms p99 ${f(pct(raw, 99))} ms | client p50 ${f(pct(cli, 50))} ms p99 ${f(pct(cli, 99))} ms | ratio client/raw p50 ${(pct(cli, 50) / pct(raw, 50)).toFixed(2)} | overhead p50 ${f(pct(cli, 50) - pct(raw, 50))} ms | handshake p50 ${f(pct(hs, 50))} ms p99 ${f(pct(hs, 99))} ms`,
    );
  } finally {
    await agent.stop();
  }
}
