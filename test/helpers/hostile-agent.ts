import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isQDict, JsonStreamer, QNum } from 'quiesce-agent/protocol';

/** One parsed request as the hostile agent sees it. */
export interface HostileRequest {
  readonly execute: string;
  /** The id argument of guest-sync(-delimited), when present. */
  readonly syncId: bigint | undefined;
  /** How many requests this connection has seen before this one. */
  readonly index: number;
}

/** Decides what the fake agent does with a request; write to the socket (or not) as the test needs. */
export type Behaviour = (req: HostileRequest, socket: Socket) => void;

/** The well-behaved answer to a sync: 0xFF-prefixed for the delimited form. */
export function answerSync(req: HostileRequest, socket: Socket): boolean {
  if (req.execute === 'guest-sync-delimited') {
    socket.write(Buffer.concat([Buffer.of(0xff), Buffer.from(`{"return": ${req.syncId}}\n`)]));
    return true;
  }
  if (req.execute === 'guest-sync') {
    socket.write(`{"return": ${req.syncId}}\n`);
    return true;
  }
  return false;
}

/**
 * A fake agent on a unix socket for tests that need a guest to misbehave:
 * huge replies, endless lines, wrong ids, late replies, disconnects.
 */
export class HostileAgent {
  readonly path: string;
  private readonly dir: string;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  connections = 0;

  private constructor(private behaviour: Behaviour) {
    this.dir = mkdtempSync(join(tmpdir(), 'hostile-'));
    this.path = join(this.dir, 'agent.sock');
    this.server = createServer((socket) => this.serve(socket));
  }

  static async start(behaviour: Behaviour): Promise<HostileAgent> {
    const a = new HostileAgent(behaviour);
    await new Promise<void>((resolve) => a.server.listen(a.path, resolve));
    return a;
  }

  setBehaviour(b: Behaviour): void {
    this.behaviour = b;
  }

  private serve(socket: Socket): void {
    this.connections++;
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    let index = 0;
    const streamer = new JsonStreamer((m) => {
      if (!m.ok || !isQDict(m.value)) return;
      const execute = m.value.get('execute');
      const args = m.value.get('arguments');
      const id = isQDict(args ?? null) ? (args as Map<string, unknown>).get('id') : undefined;
      if (typeof execute !== 'string') return;
      this.behaviour(
        { execute, syncId: id instanceof QNum ? (id.value as bigint) : undefined, index: index++ },
        socket,
      );
    });
    socket.on('data', (d: Buffer) => streamer.feed(d));
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
