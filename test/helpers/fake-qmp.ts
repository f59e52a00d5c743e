import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface FakeQmpRequest {
  readonly execute: string;
  readonly arguments?: Record<string, unknown>;
  readonly id?: unknown;
}

/** What a handler does with one request: reply now (return/error), reply later, or never. */
export type FakeQmpHandler = (req: FakeQmpRequest, conn: FakeQmpConnection) => void;

export interface FakeQmpConnection {
  readonly socket: Socket;
  reply(req: FakeQmpRequest, value: unknown): void;
  error(req: FakeQmpRequest, desc: string, cls?: string): void;
  event(event: string, data?: Record<string, unknown>): void;
  raw(text: string | Buffer): void;
}

/**
 * A scripted QMP server on a unix socket (for the host's QMP client and the
 * qmp provider's failure paths): greeting on connect (unless told not to),
 * then each request line goes to the handler. qmp_capabilities is answered
 * unless the handler takes it.
 */
export class FakeQmp {
  readonly path: string;
  readonly requests: FakeQmpRequest[] = [];
  readonly connections: FakeQmpConnection[] = [];
  private readonly dir: string;
  private readonly server: Server;

  private constructor(
    private handler: FakeQmpHandler,
    private readonly greet: boolean,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'fake-qmp-'));
    this.path = join(this.dir, 'qmp.sock');
    this.server = createServer((s) => this.onConnection(s));
  }

  static async start(handler: FakeQmpHandler, opts: { greet?: boolean } = {}): Promise<FakeQmp> {
    const f = new FakeQmp(handler, opts.greet ?? true);
    await new Promise<void>((resolve) => f.server.listen(f.path, resolve));
    return f;
  }

  setHandler(h: FakeQmpHandler): void {
    this.handler = h;
  }

  private onConnection(socket: Socket): void {
    const conn: FakeQmpConnection = {
      socket,
      reply: (req, value) => this.send(socket, { return: value, ...(req.id !== undefined ? { id: req.id } : {}) }),
      error: (req, desc, cls = 'GenericError') =>
        this.send(socket, { error: { class: cls, desc }, ...(req.id !== undefined ? { id: req.id } : {}) }),
      event: (event, data = {}) =>
        this.send(socket, { event, data, timestamp: { seconds: Math.floor(Date.now() / 1000), microseconds: 0 } }),
      raw: (text) => {
        if (!socket.destroyed) socket.write(text);
      },
    };
    this.connections.push(conn);
    socket.on('error', () => undefined);
    if (this.greet)
      this.send(socket, {
        QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: [] },
      });
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const req = JSON.parse(line) as FakeQmpRequest;
        this.requests.push(req);
        this.handler(req, conn);
        if (req.execute === 'qmp_capabilities' && !this.answered.has(req)) conn.reply(req, {});
      }
    });
  }

  /** Requests the handler answered itself (so the default qmp_capabilities reply is skipped). */
  private readonly answered = new WeakSet<FakeQmpRequest>();

  /** Marks a request as handled (call from a handler that answers qmp_capabilities itself). */
  handled(req: FakeQmpRequest): void {
    this.answered.add(req);
  }

  private send(socket: Socket, msg: unknown): void {
    if (!socket.destroyed) socket.write(`${JSON.stringify(msg)}\r\n`);
  }

  commands(): string[] {
    return this.requests.map((r) => r.execute);
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
