// A scriptable stand-in for libvirtd's unix socket: it frames packets like the real daemon (src/libvirt/packet.ts)
// and hands each call to the test, which answers, misbehaves, or stays silent.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RemoteError } from '../../src/libvirt/error.js';
import { encodePacket, MessageStatus, MessageType, PacketDecoder, type Packet } from '../../src/libvirt/packet.js';
import { REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RemoteProc } from '../../src/libvirt/protocol.js';
import { XdrWriter } from '../../src/libvirt/xdr.js';

export interface FakeConn {
  readonly socket: Socket;
  /** Every packet the client sent on this connection, in order. */
  readonly received: Packet[];
  /** Answers a call with status OK and `payload`. */
  reply(call: Packet, payload?: Uint8Array): void;
  /** Answers a call with status Error and a remote_error. */
  replyError(call: Packet, e: Partial<RemoteError> & { code: number; message: string }): void;
  /** Sends a Message packet (an event or keepalive). */
  message(program: number, procedure: number, payload?: Uint8Array, version?: number): void;
  /** Writes raw bytes. */
  write(bytes: Uint8Array): void;
}

export interface FakeLibvirtd {
  readonly path: string;
  readonly connections: FakeConn[];
  close(): Promise<void>;
}

export type CallHandler = (call: Packet, conn: FakeConn) => void;

/**
 * Answers the calls LibvirtConnection.open() makes (auth-list: none,
 * supports-feature: yes, connect-open, connect-close) and passes every other
 * packet to `handler`. Pass `handshake: false` to see those too.
 */
export async function startFakeLibvirtd(
  handler: CallHandler,
  opts: { handshake?: boolean } = {},
): Promise<FakeLibvirtd> {
  const dir = mkdtempSync(join(tmpdir(), 'fake-libvirtd-'));
  const path = join(dir, 'libvirt-sock');
  const connections: FakeConn[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const decoder = new PacketDecoder();
    const conn = makeConn(socket);
    connections.push(conn);
    socket.on('data', (chunk: Buffer) => {
      let packets: Packet[];
      try {
        packets = decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const p of packets) {
        conn.received.push(p);
        if ((opts.handshake ?? true) && handshake(p, conn)) continue;
        handler(p, conn);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return {
    path,
    connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function handshake(p: Packet, conn: FakeConn): boolean {
  if (p.header.program !== REMOTE_PROGRAM || p.header.type !== MessageType.Call) return false;
  switch (p.header.procedure) {
    case RemoteProc.AUTH_LIST:
      conn.reply(p, new XdrWriter().uint(1).int(0).toBuffer());
      return true;
    case RemoteProc.CONNECT_SUPPORTS_FEATURE:
      conn.reply(p, new XdrWriter().int(1).toBuffer());
      return true;
    case RemoteProc.CONNECT_OPEN:
    case RemoteProc.CONNECT_CLOSE:
      conn.reply(p);
      return true;
    default:
      return false;
  }
}

function makeConn(socket: Socket): FakeConn {
  const send = (p: Packet, status: number, payload?: Uint8Array): void => {
    socket.write(
      encodePacket(
        {
          program: p.header.program,
          version: p.header.version,
          procedure: p.header.procedure,
          type: MessageType.Reply,
          serial: p.header.serial,
          status,
        },
        payload,
      ),
    );
  };
  return {
    socket,
    received: [],
    reply: (call, payload) => send(call, MessageStatus.Ok, payload),
    replyError: (call, e) => send(call, MessageStatus.Error, encodeRemoteError(e)),
    message: (program, procedure, payload, version = REMOTE_PROTOCOL_VERSION) =>
      socket.write(
        encodePacket(
          { program, version, procedure, type: MessageType.Message, serial: 0, status: MessageStatus.Ok },
          payload,
        ),
      ),
    write: (bytes) => socket.write(bytes),
  };
}

/** remote_error as libvirtd sends it (dom and net absent). */
export function encodeRemoteError(e: Partial<RemoteError> & { code: number; message: string }): Buffer {
  const w = new XdrWriter();
  const str = (s: string | undefined): void => {
    w.optional(s, (x, v) => x.string(v));
  };
  w.int(e.code).int(e.domain ?? 10);
  str(e.message);
  w.int(e.level ?? 2);
  w.uint(0); // dom
  str(e.str1);
  str(e.str2);
  str(e.str3);
  w.int(e.int1 ?? -1).int(e.int2 ?? -1);
  w.uint(0); // net
  return w.toBuffer();
}
