/**
 * guest-file-read and guest-file-write throughput, quiesce-agent against
 * qemu-ga, in one run: both in unix-listen mode, one raw client each, 4 MiB
 * per request (BENCH_CHUNK_MIB), BENCH_TOTAL_MIB (default 128) per direction
 * and round, BENCH_ROUNDS rounds (default 3) alternating which agent goes
 * first. The file read is in the page cache (read once before timing); the
 * file written is truncated at each round. Prints MiB/s (median of the
 * rounds) per agent and direction and the ratio ours/reference.
 *
 * Target: ratio >= 1.5 in both directions.
 */
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../test/helpers/agents.js';

const MiB = 1024 * 1024;
const CHUNK = Number(process.env['BENCH_CHUNK_MIB'] ?? 4) * MiB;
const TOTAL = Number(process.env['BENCH_TOTAL_MIB'] ?? 128) * MiB;
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);

/** A raw client that only looks for the end of each reply line: the client's own cost stays out of the figures. */
class LineClient {
  private chunks: Buffer[] = [];
  private waiter: ((line: Buffer[]) => void) | undefined;
  private pending: Buffer[][] = [];

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
  }

  static async open(path: string): Promise<LineClient> {
    const s = connect(path);
    await once(s, 'connect');
    return new LineClient(s);
  }

  private onData(d: Buffer): void {
    let from = 0;
    for (let nl = d.indexOf(10); nl >= 0; nl = d.indexOf(10, from)) {
      this.chunks.push(d.subarray(from, nl));
      const line = this.chunks;
      this.chunks = [];
      from = nl + 1;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(line);
      } else {
        this.pending.push(line);
      }
    }
    if (from < d.length) this.chunks.push(d.subarray(from));
  }

  /** Sends one request and resolves with its reply line as the chunks it arrived in. */
  request(req: Buffer | string): Promise<Buffer[]> {
    this.socket.write(req);
    const ready = this.pending.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  async json(req: unknown): Promise<unknown> {
    const line = await this.request(JSON.stringify(req));
    return JSON.parse(Buffer.concat(line).toString('latin1')) as unknown;
  }

  close(): void {
    this.socket.destroy();
  }
}

function text(line: Buffer[]): { head: string; tail: string } {
  const first = line[0]!;
  const last = line[line.length - 1]!;
  return { head: first.subarray(0, 64).toString('latin1'), tail: last.subarray(-32).toString('latin1') };
}

async function openHandle(c: LineClient, path: string, mode: string): Promise<number> {
  const r = (await c.json({ execute: 'guest-file-open', arguments: { path, mode } })) as { return?: number };
  if (typeof r.return !== 'number') throw new Error(`guest-file-open failed: ${JSON.stringify(r)}`);
  return r.return;
}

/** Reads the whole file in CHUNK requests; returns seconds. */
async function readAll(c: LineClient, path: string): Promise<number> {
  const h = await openHandle(c, path, 'r');
  const req = `{"execute":"guest-file-read","arguments":{"handle":${h},"count":${CHUNK}}}`;
  let total = 0;
  const t0 = process.hrtime.bigint();
  for (;;) {
    const { head, tail } = text(await c.request(req));
    const m = /^\{"return": \{"count": (\d+), /.exec(head);
    if (!m) throw new Error(`unexpected read reply ${head}`);
    total += Number(m[1]);
    if (tail.endsWith('"eof": true}}')) break;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await c.json({ execute: 'guest-file-close', arguments: { handle: h } });
  if (total !== TOTAL) throw new Error(`read ${total} bytes, expected ${TOTAL}`);
  return s;
}

/** Writes TOTAL bytes in CHUNK requests; returns seconds. */
async function writeAll(c: LineClient, path: string, payloads: readonly string[]): Promise<number> {
  const h = await openHandle(c, path, 'w');
  const requests = payloads.map((b64) =>
    Buffer.from(`{"execute":"guest-file-write","arguments":{"handle":${h},"buf-b64":"${b64}"}}`, 'latin1'),
  );
  const t0 = process.hrtime.bigint();
  for (const req of requests) {
    const { head } = text(await c.request(req));
    if (!head.startsWith(`{"return": {"count": ${CHUNK}, `)) throw new Error(`unexpected write reply ${head}`);
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await c.json({ execute: 'guest-file-close', arguments: { handle: h } });
  if (statSync(path).size !== TOTAL) throw new Error(`wrote ${statSync(path).size} bytes, expected ${TOTAL}`);
  return s;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const kinds: AgentKind[] = haveQemuGa() ? ['quiesce', 'qemu-ga'] : ['quiesce'];
if (kinds.length === 1) console.log('qemu-ga not installed: measuring quiesce-agent alone');

const dir = mkdtempSync(join(tmpdir(), 'bench-file-'));
const agents = new Map<AgentKind, RunningAgent>();
const clients = new Map<AgentKind, LineClient>();
const speeds = new Map<string, number[]>();
try {
  const source = join(dir, 'source');
  const data = randomBytes(TOTAL);
  writeFileSync(source, data);
  const payloads: string[] = [];
  for (let off = 0; off < TOTAL; off += CHUNK) payloads.push(data.subarray(off, off + CHUNK).toString('base64'));

  for (const k of kinds) {
    agents.set(k, await startAgent(k));
    clients.set(k, await LineClient.open(agents.get(k)!.socket));
  }
  // Warm-up: the page cache for the source, and each agent's code paths.
  for (const k of kinds) {
    await readAll(clients.get(k)!, source);
    await writeAll(clients.get(k)!, join(dir, `out-${k}`), payloads);
  }
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? kinds : [...kinds].reverse();
    for (const k of order) {
      const c = clients.get(k)!;
      const mibs = TOTAL / MiB;
      (speeds.get(`${k} read`) ?? speeds.set(`${k} read`, []).get(`${k} read`)!).push(
        mibs / (await readAll(c, source)),
      );
      const out = join(dir, `out-${k}`);
      (speeds.get(`${k} write`) ?? speeds.set(`${k} write`, []).get(`${k} write`)!).push(
        mibs / (await writeAll(c, out, payloads)),
      );
    }
  }

  console.log(
    `guest-file-read / guest-file-write, ${CHUNK / MiB} MiB per request, ${TOTAL / MiB} MiB per direction, median of ${ROUNDS} rounds`,
  );
  for (const dirn of ['read', 'write']) {
    const line = kinds.map((k) => `${k} ${median(speeds.get(`${k} ${dirn}`)!).toFixed(0)} MiB/s`).join('  ');
    let ratio = '';
    if (kinds.length === 2) {
      const r = median(speeds.get(`quiesce ${dirn}`)!) / median(speeds.get(`qemu-ga ${dirn}`)!);
      ratio = `  ratio ours/reference ${r.toFixed(2)} (target >= 1.5)`;
    }
    console.log(`${dirn.padEnd(5)}  ${line}${ratio}`);
  }
} finally {
  for (const c of clients.values()) c.close();
  for (const a of agents.values()) await a.stop();
  rmSync(dir, { recursive: true, force: true });
}
