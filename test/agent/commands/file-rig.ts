import { once } from 'node:events';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';

export const SKIP_NO_QEMU_GA = haveQemuGa()
  ? false
  : 'needs the reference agent /usr/sbin/qemu-ga to compare with (apt-get install qemu-guest-agent)';

/**
 * What the reference must never do on this machine. The file commands stay
 * enabled (the tests only touch files in their own temporary directories).
 */
export const BLOCKED_ON_REFERENCE = [
  'guest-fsfreeze-freeze',
  'guest-fsfreeze-freeze-list',
  'guest-fsfreeze-thaw',
  'guest-fstrim',
  'guest-shutdown',
  'guest-suspend-disk',
  'guest-suspend-ram',
  'guest-suspend-hybrid',
  'guest-set-time',
  'guest-set-vcpus',
  'guest-set-memory-blocks',
  'guest-set-user-password',
  'guest-exec',
  'guest-ssh-add-authorized-keys',
  'guest-ssh-remove-authorized-keys',
];

/**
 * A raw client that reads whole reply lines without copying the stream over
 * and over (replies here can be tens of megabytes). Every request the file
 * commands get has exactly one reply line.
 */
export class LineClient {
  private chunks: Buffer[] = [];
  private readonly lines: Buffer[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      let from = 0;
      for (let nl = d.indexOf(10); nl >= 0; nl = d.indexOf(10, from)) {
        this.chunks.push(d.subarray(from, nl));
        this.lines.push(Buffer.concat(this.chunks));
        this.chunks = [];
        from = nl + 1;
      }
      if (from < d.length) this.chunks.push(d.subarray(from));
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static async open(path: string): Promise<LineClient> {
    const s = connect(path);
    await once(s, 'connect');
    return new LineClient(s);
  }

  /** The next reply line (latin1 text, newline removed). */
  async line(timeoutMs = 30000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.closed) throw new Error('connection closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timeout waiting for a reply');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.lines.shift()!.toString('latin1');
  }

  /** Strings go out as UTF-8. */
  send(bytes: Buffer | string): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes);
  }

  /** Sends one request (raw text or a value to stringify) and returns its reply line. */
  async request(req: string | Buffer | object): Promise<string> {
    this.send(typeof req === 'string' || Buffer.isBuffer(req) ? req : JSON.stringify(req));
    return this.line();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** One step: a command and its arguments; `$W` in strings is the agent's work dir, `"$H"` the last handle opened. */
export type Step = readonly [execute: string, args?: unknown] | { readonly raw: string };

/** quiesce-agent and qemu-ga side by side, each with a state dir and a work dir of its own. */
export class FilePair {
  private readonly last = new Map<AgentKind, number>();

  private constructor(
    readonly agents: Record<AgentKind, RunningAgent>,
    readonly clients: Record<AgentKind, LineClient>,
    readonly root: string,
  ) {}

  static async start(root: string): Promise<FilePair> {
    const ours = await startAgent('quiesce');
    let ref: RunningAgent;
    try {
      ref = await startAgent('qemu-ga', { args: ['-b', BLOCKED_ON_REFERENCE.join(',')] });
    } catch (err) {
      await ours.stop();
      throw err;
    }
    const agents = { quiesce: ours, 'qemu-ga': ref };
    try {
      const clients = { quiesce: await LineClient.open(ours.socket), 'qemu-ga': await LineClient.open(ref.socket) };
      return new FilePair(agents, clients, root);
    } catch (err) {
      await Promise.all([ours.stop(), ref.stop()]);
      throw err;
    }
  }

  /** A fresh work dir per agent for one case. */
  workDir(kind: AgentKind, name: string): string {
    return join(this.root, kind, name);
  }

  /** Creates the case's work dirs and runs `setup` in each. */
  prepare(name: string, setup: (dir: string) => void = () => undefined): void {
    for (const kind of ['quiesce', 'qemu-ga'] as const) {
      const dir = this.workDir(kind, name);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      setup(dir);
    }
  }

  /** Runs the steps on one agent; returns reply lines with its work dir written as `$W`. */
  async runOn(kind: AgentKind, name: string, steps: readonly Step[]): Promise<string[]> {
    const dir = this.workDir(kind, name);
    const out: string[] = [];
    for (const step of steps) {
      const text =
        'raw' in step
          ? step.raw
          : JSON.stringify(step[1] === undefined ? { execute: step[0] } : { execute: step[0], arguments: step[1] });
      const req = text.replaceAll('$W', dir).replaceAll('"$H"', String(this.last.get(kind) ?? -1));
      const reply = await this.clients[kind].request(req);
      const m = /^\{"return": (\d+)\}$/.exec(reply);
      if (m && req.includes('guest-file-open')) this.last.set(kind, Number(m[1]));
      out.push(reply.replaceAll(dir, '$W'));
    }
    return out;
  }

  /** The same steps on both agents. */
  async run(name: string, steps: readonly Step[]): Promise<Record<AgentKind, string[]>> {
    return { quiesce: await this.runOn('quiesce', name, steps), 'qemu-ga': await this.runOn('qemu-ga', name, steps) };
  }

  async stop(): Promise<void> {
    this.clients.quiesce.close();
    this.clients['qemu-ga'].close();
    await Promise.all([this.agents.quiesce.stop(), this.agents['qemu-ga'].stop()]);
  }
}

/** Every entry below `dir`: type, permission bits, size and content (hex for files up to 4 KiB). Names as bytes. */
export function snapshotDir(dir: string | Buffer): string[] {
  const out: string[] = [];
  const names = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
  for (const name of names) {
    const path = Buffer.concat([Buffer.from(dir), Buffer.from('/'), name]);
    const st = lstatSync(path);
    const mode = (st.mode & 0o7777).toString(8);
    const shown = JSON.stringify(name.toString('latin1'));
    if (st.isFile()) {
      const content = st.size <= 4096 ? readFileSync(path).toString('hex') : `${st.size} bytes`;
      out.push(`${shown} file ${mode} ${content}`);
    } else if (st.isDirectory()) {
      out.push(`${shown} dir ${mode}`, ...snapshotDir(path).map((l) => `${shown}/${l}`));
    } else {
      out.push(`${shown} other ${mode}`);
    }
  }
  return out;
}
