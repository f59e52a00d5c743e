import { connect, type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/**
 * A minimal QMP client for tests: reads the greeting, negotiates
 * capabilities, matches replies to requests by id and keeps events apart
 * (they arrive interleaved with replies).
 */
export class Qmp {
  /** The greeting's QMP member (version, capabilities). */
  greeting: Record<string, unknown> = {};
  /** Every event received so far, oldest first. */
  readonly events: QmpEvent[] = [];
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private eventWaiters: (() => void)[] = [];
  private closed = false;
  private greeted?: (g: Record<string, unknown>) => void;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('close', () => this.onClose(new Error('QMP connection closed')));
    socket.on('error', (e) => this.onClose(e));
  }

  /** Connects, waits for the greeting and sends qmp_capabilities. */
  static async open(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const qmp = new Qmp(socket);
    try {
      qmp.greeting = await withTimeout(
        new Promise<Record<string, unknown>>((resolve) => (qmp.greeted = resolve)),
        timeoutMs,
        'QMP greeting',
      );
      await qmp.execute('qmp_capabilities', undefined, timeoutMs);
      return qmp;
    } catch (err) {
      qmp.close();
      throw err;
    }
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.greeted?.(msg['QMP'] as Record<string, unknown>);
      return;
    }
    if (typeof msg['event'] === 'string') {
      this.events.push(msg as unknown as QmpEvent);
      for (const w of this.eventWaiters.splice(0)) w();
      return;
    }
    const id = typeof msg['id'] === 'string' ? msg['id'] : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return;
    this.pending.delete(id);
    const err = msg['error'] as { class?: string; desc?: string } | undefined;
    if (err) p.reject(new QmpError(p.command, err.class ?? '?', err.desc ?? ''));
    else p.resolve(msg['return']);
  }

  private onClose(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.eventWaiters.splice(0)) w();
  }

  /** Runs one command and returns its `return` member (throws QmpError on an error reply). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closed) return Promise.reject(new Error('QMP connection closed'));
    const id = `t${this.nextId++}`;
    const reply = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
    });
    this.socket.write(
      JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + '\n',
    );
    return withTimeout(reply, timeoutMs, `QMP ${command}`).finally(() => this.pending.delete(id));
  }

  /**
   * Waits for an event (already received ones count, from index `since` on)
   * matching the name and predicate; returns it.
   */
  async waitForEvent(
    name: string,
    pred: (e: QmpEvent) => boolean = () => true,
    timeoutMs = 30_000,
    since = 0,
  ): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.slice(since).find((e) => e.event === name && pred(e));
      if (hit) return hit;
      if (this.closed) throw new Error(`QMP connection closed while waiting for ${name}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for QMP event ${name}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.eventWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.socket.destroy();
    this.onClose(new Error('QMP connection closed'));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}
