import { createCipheriv, createHash } from 'node:crypto';
import { posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectorSpec } from '../../../src/config/connector.js';
import { guestAgent } from '../../../src/guest/connect.js';
import type { GuestAgent } from '../../../src/guest/types.js';
import { GUEST_DATA_MOUNT, type Guest } from './qemu.js';
import { WRITER_PAUSE_FILE, WRITER_PAUSED, WRITER_RESUMED, WRITER_STARTED } from './writer.js';

/**
 * Things done inside a test guest through its agent (either kind: both run
 * guest-exec and guest-file-*): run a command, sync, checksum a directory,
 * write a file of known content, pause and resume the data writer.
 *
 * Each call opens its own connection to the agent's chardev and closes it
 * afterwards (QEMU takes one client at a time): do not hold another one open
 * meanwhile. Inside the guest everything is busybox.
 */

/** sha256 (hex) by path relative to the checksummed directory, with a leading '/' (`/w/log`). */
export type Checksums = Map<string, string>;

export interface ExecResult {
  /** Undefined when a signal ended it. */
  readonly exitcode: number | undefined;
  readonly signal: number | undefined;
  readonly out: Buffer;
  readonly err: Buffer;
}

export interface ExecOptions {
  /** Budget for the command to end (default 120 s: TCG is slow). */
  readonly timeoutMs?: number;
  /** Bytes for its stdin (sent as guest-exec input-data). */
  readonly input?: Buffer;
  /** Throw unless it exits 0 (default true). */
  readonly check?: boolean;
}

/**
 * A guest these helpers work on: one booted by bootGuest (its agent socket),
 * or one under libvirt (test/helpers/libvirt.ts: its agent through libvirt).
 */
export type OpsGuest = Pick<Guest, 'console' | 'consoleOffset' | 'waitForConsole'> &
  ({ readonly qgaSocket: string } | { readonly agentConnector: ConnectorSpec });

/** Runs `fn` with a fresh agent connection to the guest, closed afterwards. */
export async function withAgent<T>(g: OpsGuest, fn: (agent: GuestAgent) => Promise<T>): Promise<T> {
  const agent = await guestAgent('qgaSocket' in g ? { kind: 'socket', path: g.qgaSocket } : g.agentConnector);
  try {
    return await fn(agent);
  } finally {
    await agent.close();
  }
}

/**
 * guest-exec of `path args…` with captured output, then guest-exec-status
 * until it exited; out-data/err-data decoded from base64.
 */
export async function guestExec(
  g: OpsGuest,
  path: string,
  args: readonly string[] = [],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return withAgent(g, async (agent) => {
    const started = (await agent.execute(
      'guest-exec',
      {
        path,
        arg: [...args],
        'capture-output': true,
        ...(opts.input ? { 'input-data': opts.input.toString('base64') } : {}),
      },
      { timeoutMs: 30_000 },
    )) as { pid: number };
    const deadline = Date.now() + timeoutMs;
    for (let wait = 20; ; wait = Math.min(wait * 2, 250)) {
      const s = (await agent.execute('guest-exec-status', { pid: started.pid }, { timeoutMs: 30_000 })) as {
        exited: boolean;
        exitcode?: number;
        signal?: number;
        'out-data'?: string;
        'err-data'?: string;
      };
      if (s.exited) {
        const r: ExecResult = {
          exitcode: s.exitcode,
          signal: s.signal,
          out: Buffer.from(s['out-data'] ?? '', 'base64'),
          err: Buffer.from(s['err-data'] ?? '', 'base64'),
        };
        if ((opts.check ?? true) && r.exitcode !== 0)
          throw new Error(
            `guest-exec ${[path, ...args].join(' ')}: ${r.exitcode === undefined ? `signal ${r.signal}` : `exit ${r.exitcode}`}: ${r.err.toString().trim()}`,
          );
        return r;
      }
      if (Date.now() > deadline)
        throw new Error(
          `guest-exec ${[path, ...args].join(' ')} (pid ${started.pid}) still running after ${timeoutMs} ms`,
        );
      await sleep(wait);
    }
  });
}

/** Runs a busybox shell script in the guest (`/bin/sh -c SCRIPT sh ARGS…`); returns its stdout. */
export async function guestSh(
  g: OpsGuest,
  script: string,
  args: readonly string[] = [],
  opts: ExecOptions = {},
): Promise<string> {
  const r = await guestExec(
    g,
    '/bin/sh',
    ['-c', `export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n${script}`, 'sh', ...args],
    opts,
  );
  return r.out.toString();
}

/** `sync` in the guest: dirty data and the ext4 journal reach the disk, and QEMU flushes its image (qcow2 metadata too). */
export async function guestSync(g: OpsGuest): Promise<void> {
  await guestSh(g, 'sync');
}

/**
 * sha256 of every regular file under `dir` in the guest (default /data),
 * leaving out `lost+found` at its top. Paths as in imageChecksums.
 */
export async function guestChecksums(g: OpsGuest, dir = GUEST_DATA_MOUNT): Promise<Checksums> {
  const out = await guestSh(
    g,
    'cd "$1" && find . -path ./lost+found -prune -o -type f -print0 | xargs -0 -r sha256sum',
    [dir],
  );
  const sums: Checksums = new Map();
  for (const line of out.split('\n')) {
    if (line === '') continue;
    const m = /^([0-9a-f]{64}) {2}\.(\/.*)$/.exec(line);
    if (!m) throw new Error(`guestChecksums: unexpected line ${JSON.stringify(line)}`);
    sums.set(m[2]!, m[1]!);
  }
  return new Map([...sums].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Where two checksum maps differ (empty when they agree), one line per path. */
export function diffChecksums(a: Checksums, b: Checksums, names: [string, string] = ['a', 'b']): string[] {
  const out: string[] = [];
  for (const [p, h] of a) {
    const o = b.get(p);
    if (o === undefined) out.push(`${p}: only in ${names[0]}`);
    else if (o !== h) out.push(`${p}: ${names[0]} ${h.slice(0, 12)} ≠ ${names[1]} ${o.slice(0, 12)}`);
  }
  for (const p of b.keys()) if (!a.has(p)) out.push(`${p}: only in ${names[1]}`);
  return out;
}

/**
 * `bytes` of pseudo-random data determined by `seed` (AES-256-CTR over zeros,
 * keyed by sha256 of the seed): the same seed always gives the same bytes.
 */
export function seededBytes(bytes: number, seed: string | number): Buffer {
  const key = createHash('sha256').update(`quiesce-vm:${seed}`).digest();
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(bytes)), c.final()]);
}

export interface WrittenFile {
  readonly path: string;
  readonly bytes: number;
  /** sha256 (hex) of what was written: seededBytes(bytes, seed). */
  readonly sha256: string;
}

/** 64 KiB: libvirt 9.0 garbles agent commands above its socket buffer (~208 KiB); quiesce refuses > 128 KiB. */
const WRITE_CHUNK = 64 << 10;

/**
 * Writes seededBytes(bytes, seed) to `path` in the guest (parent directories
 * made, the file replaced) with guest-file-open/-write/-close in 64 KiB chunks,
 * then `sync`s: when it returns, the file is on the disk.
 */
export async function writeGuestFile(
  g: OpsGuest,
  path: string,
  opts: { bytes: number; seed: string | number },
): Promise<WrittenFile> {
  if (!posix.isAbsolute(path)) throw new Error(`writeGuestFile: ${path} is not absolute`);
  const data = seededBytes(opts.bytes, opts.seed);
  await guestSh(g, 'mkdir -p "$1"', [posix.dirname(path)]);
  await withAgent(g, async (agent) => {
    const handle = (await agent.execute('guest-file-open', { path, mode: 'w' }, { timeoutMs: 30_000 })) as number;
    try {
      for (let at = 0; at < data.length; at += WRITE_CHUNK) {
        const chunk = data.subarray(at, at + WRITE_CHUNK);
        const r = (await agent.execute(
          'guest-file-write',
          { handle, 'buf-b64': chunk.toString('base64') },
          { timeoutMs: 120_000 },
        )) as { count: number };
        if (r.count !== chunk.length)
          throw new Error(`guest-file-write ${path} at ${at}: wrote ${r.count} of ${chunk.length} bytes`);
      }
    } finally {
      await agent.execute('guest-file-close', { handle }, { timeoutMs: 30_000 });
    }
  });
  await guestSync(g);
  return { path, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}

/**
 * Pauses the guest's writer (init.sh, booted with WRITER_ARG): creates
 * WRITER_PAUSE_FILE and waits for the writer's "writer paused N". From then on
 * the writer writes nothing until resumeWriter(). Returns N, the last file it
 * wrote (its number is the last line of /data/w/log).
 */
export async function pauseWriter(g: OpsGuest, timeoutMs = 120_000): Promise<number> {
  if (!WRITER_STARTED.test(g.console()))
    throw new Error('pauseWriter: this guest runs no writer (boot it with WRITER_ARG)');
  const since = g.consoleOffset();
  const was = await guestSh(g, '[ -e "$1" ] && echo already; : >"$1"', [WRITER_PAUSE_FILE]);
  if (was.trim() === 'already') {
    const all = [...g.console().matchAll(new RegExp(WRITER_PAUSED.source, 'g'))];
    const last = all.at(-1);
    if (!last) throw new Error('pauseWriter: the pause file was there, but the writer never said it paused');
    return Number(last[1]);
  }
  const m = await g.waitForConsole(WRITER_PAUSED, timeoutMs, since);
  return Number(m[1]);
}

/** Removes WRITER_PAUSE_FILE and waits for the writer's "writer resumed". */
export async function resumeWriter(g: OpsGuest, timeoutMs = 60_000): Promise<void> {
  const since = g.consoleOffset();
  const was = await guestSh(g, '[ -e "$1" ] || echo absent; rm -f "$1"', [WRITER_PAUSE_FILE]);
  if (was.trim() === 'absent') return; // not paused
  await g.waitForConsole(WRITER_RESUMED, timeoutMs, since);
}
