import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BootChecks } from '../config/types.js';
import type { GuestAgent } from '../guest/types.js';
import type { VerifyCheck } from './types.js';

/** Bytes asked for per guest-file-read (base64 in the reply stays well under the 10 MiB reply cap). */
const READ_CHUNK = 1 << 20;
/** How often guest-exec-status is asked while a command runs. */
const EXEC_POLL_MS = 100;
/** The longest one agent call may take (a call never outlives the verify's deadline either). */
const CALL_MS = 10_000;

export interface CheckContext {
  /** performance.now() by which every check must be done. */
  readonly deadline: number;
  readonly signal?: AbortSignal | undefined;
}

/**
 * The configured checks of a booted restore point, through its agent, in
 * order: mountpoints (guest-get-fsinfo), files (guest-file-open/read/close,
 * sha256), commands (guest-exec, exit 0). Never throws for a failed check;
 * one that runs out of time fails, and so do the ones after it.
 */
export async function runBootChecks(agent: GuestAgent, checks: BootChecks, ctx: CheckContext): Promise<VerifyCheck[]> {
  const out: VerifyCheck[] = [];
  const call = (command: string, args?: Record<string, unknown>): Promise<unknown> => {
    const left = ctx.deadline - performance.now();
    if (left <= 0) return Promise.reject(new Error('the verify timeout ran out'));
    return agent.execute(command, args, {
      timeoutMs: Math.max(1, Math.min(CALL_MS, left)),
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
  };
  const attempt = async (name: string, fn: () => Promise<VerifyCheck>): Promise<void> => {
    ctx.signal?.throwIfAborted();
    try {
      out.push(await fn());
    } catch (err) {
      ctx.signal?.throwIfAborted();
      out.push({ name, ok: false, detail: (err as Error).message });
    }
  };

  if (checks.mountpoints.length > 0) {
    let mounted: { mountpoint: string; type: string; name: string }[] | undefined;
    await attempt('guest-get-fsinfo', async () => {
      mounted = fsinfo(await call('guest-get-fsinfo'));
      return { name: 'guest-get-fsinfo', ok: true, detail: `${mounted.length} filesystem(s)` };
    });
    for (const m of checks.mountpoints) {
      const name = `mountpoint ${m}`;
      if (!mounted) {
        out.push({ name, ok: false, detail: 'guest-get-fsinfo failed' });
        continue;
      }
      const found = mounted.find((f) => samePath(f.mountpoint) === samePath(m));
      out.push(
        found
          ? { name, ok: true, detail: `${found.type} on ${found.name}` }
          : {
              name,
              ok: false,
              detail: `not mounted (mounted: ${mounted.map((f) => f.mountpoint).join(', ') || 'nothing'})`,
            },
      );
    }
  }

  for (const f of checks.files) {
    const name = `file ${f.path}`;
    await attempt(name, async () => {
      const { hash, bytes } = await sha256Of(f.path, call);
      return hash === f.sha256.toLowerCase()
        ? { name, ok: true, detail: `sha256 matches (${bytes} bytes)` }
        : { name, ok: false, detail: `sha256 ${hash} (${bytes} bytes), expected ${f.sha256.toLowerCase()}` };
    });
  }

  for (const argv of checks.commands) {
    const name = `command ${argv.join(' ')}`;
    await attempt(name, async () => {
      const r = await exec(argv, call, ctx);
      const said = r.stderr || r.stdout;
      return r.exitcode === 0
        ? { name, ok: true, detail: 'exit 0' }
        : {
            name,
            ok: false,
            detail: `${r.signal !== undefined ? `killed by signal ${r.signal}` : `exit ${r.exitcode}`}${said ? `: ${said}` : ''}`,
          };
    });
  }
  return out;
}

function samePath(p: string): string {
  return p.replace(/(.)\/+$/, '$1');
}

function fsinfo(reply: unknown): { mountpoint: string; type: string; name: string }[] {
  if (!Array.isArray(reply)) throw new Error('guest-get-fsinfo: not a list');
  return reply.map((f: unknown) => {
    const o = (f ?? {}) as Record<string, unknown>;
    return {
      mountpoint: String(o['mountpoint'] ?? ''),
      type: String(o['type'] ?? '?'),
      name: String(o['name'] ?? '?'),
    };
  });
}

type Call = (command: string, args?: Record<string, unknown>) => Promise<unknown>;

/** Reads a file through guest-file-open/read/close and hashes it; the handle is closed on every path. */
async function sha256Of(path: string, call: Call): Promise<{ hash: string; bytes: number }> {
  const handle = await call('guest-file-open', { path, mode: 'r' });
  if (typeof handle !== 'number') throw new Error('guest-file-open: no handle');
  const h = createHash('sha256');
  let bytes = 0;
  try {
    for (;;) {
      const r = (await call('guest-file-read', { handle, count: READ_CHUNK })) as {
        count?: number;
        'buf-b64'?: string;
        eof?: boolean;
      };
      const buf = Buffer.from(r['buf-b64'] ?? '', 'base64');
      h.update(buf);
      bytes += buf.length;
      if (r.eof || buf.length === 0) break;
    }
  } finally {
    await call('guest-file-close', { handle }).catch(() => undefined);
  }
  return { hash: h.digest('hex'), bytes };
}

interface ExecStatus {
  exitcode?: number;
  signal?: number;
  stdout: string;
  stderr: string;
}

/** guest-exec with captured output, then guest-exec-status until it exited (or the deadline). */
async function exec(argv: readonly string[], call: Call, ctx: CheckContext): Promise<ExecStatus> {
  const started = (await call('guest-exec', {
    path: argv[0],
    arg: argv.slice(1),
    'capture-output': true,
  })) as { pid?: number };
  if (typeof started?.pid !== 'number') throw new Error('guest-exec: no pid');
  for (;;) {
    const s = (await call('guest-exec-status', { pid: started.pid })) as Record<string, unknown>;
    if (s['exited'] === true) {
      const text = (k: string) =>
        Buffer.from(typeof s[k] === 'string' ? s[k] : '', 'base64')
          .toString('utf8')
          .trim()
          .split('\n')
          .slice(-3)
          .join(' | ');
      return {
        ...(typeof s['exitcode'] === 'number' ? { exitcode: s['exitcode'] } : {}),
        ...(typeof s['signal'] === 'number' ? { signal: s['signal'] } : {}),
        stdout: text('out-data'),
        stderr: text('err-data'),
      };
    }
    if (performance.now() + EXEC_POLL_MS > ctx.deadline)
      throw new Error('still running when the verify timeout ran out');
    await sleep(EXEC_POLL_MS, undefined, ctx.signal ? { signal: ctx.signal } : {});
  }
}
