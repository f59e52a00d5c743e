import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { awaitReply, ConnectionEnd } from '../connection.js';
import { QuiesceError } from '../errors.js';
import { LibvirtError, readRemoteError } from './error.js';
import {
  DEFAULT_MAX_PACKET_BYTES,
  encodePacket,
  MessageStatus,
  MessageType,
  PacketDecoder,
  type Packet,
  type PacketHeader,
} from './packet.js';
import { XdrReader } from './xdr.js';

/** libvirtd's read-write socket for qemu:///system. */
export const DEFAULT_SOCKET = '/var/run/libvirt/libvirt-sock';

/** virkeepaliveprotocol.x: PING and PONG carry no payload, serial 0, type Message. */
export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_VERSION = 1;
export const KeepaliveProc = { PING: 1, PONG: 2 } as const;

export interface RpcClientOptions {
  /** Connecting to the socket (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** Default per-call timeout (default 30 s); a call may set its own. */
  readonly callTimeoutMs?: number;
  /** Largest packet accepted (default 32 MiB); a bigger one closes the connection. */
  readonly maxPacketBytes?: number;
  /** Named in errors. */
  readonly guest?: string;
}

export interface CallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** A packet of type Message other than keepalive: an event for whoever registered for it. */
export interface RpcMessage {
  readonly program: number;
  readonly version: number;
  readonly procedure: number;
  readonly payload: Buffer;
}

export interface RpcStats {
  /** Keepalive PINGs from the daemon answered with a PONG. */
  pingsAnswered: number;
  /** Replies whose serial matched no pending call (late replies after a timeout, or a confused peer). */
  strayReplies: number;
  /** Packets of a type this client never expects (streams, calls from the server). */
  ignoredPackets: number;
}

/**
 * Any duplex byte stream to libvirtd: its unix socket, or a helper process's
 * stdio (`ssh host virt-ssh-helper URI` for qemu+ssh). `ref`/`unref` decide
 * whether an idle connection keeps the process alive; `close` ends whatever
 * carries the stream (a helper process) once the stream is destroyed.
 */
export interface RpcTransport {
  readonly stream: Duplex;
  /** Named in errors (`libvirt:/var/run/libvirt/libvirt-sock`, `libvirt+ssh:root@host`). */
  readonly address: string;
  ref?(): void;
  unref?(): void;
  close?(): void;
}

interface Pending {
  readonly name: string;
  readonly program: number;
  readonly procedure: number;
  resolve(payload: Buffer): void;
  reject(err: Error): void;
}

/**
 * One connection to libvirtd speaking its RPC protocol: calls carry a serial
 * and any number may be in flight (replies are matched by serial), each call
 * has its own timeout, packets of type Message go to listeners, the daemon's
 * keepalive PINGs are answered at once, and every packet is bounded. A
 * framing error ends the connection (a length-prefixed stream cannot
 * resynchronise) and fails every pending call with it.
 */
export class RpcClient {
  readonly address: string;
  readonly stats: RpcStats = { pingsAnswered: 0, strayReplies: 0, ignoredPackets: 0 };
  private readonly pending = new Map<number, Pending>();
  private readonly messageListeners = new Set<(m: RpcMessage) => void>();
  private readonly pongWaiters = new Set<() => void>();
  private readonly decoder: PacketDecoder;
  private nextSerial = 1;
  private readonly ended = new ConnectionEnd();
  private readonly socket: Duplex;

  private constructor(
    private readonly transport: RpcTransport,
    private readonly opts: RpcClientOptions,
  ) {
    const socket = transport.stream;
    this.socket = socket;
    this.address = transport.address;
    this.decoder = new PacketDecoder(opts.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES);
    // First to hear of the end: the stream, then the calls in flight.
    this.ended.listen((err) => {
      socket.destroy();
      transport.close?.();
      for (const p of [...this.pending.values()]) p.reject(err);
      this.pending.clear();
    });
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err) => this.ended.end(this.gone(err.message)));
    socket.on('close', () => this.ended.end(this.gone('closed by libvirtd')));
  }

  /** A client over any duplex stream (see RpcTransport); no call is made yet. */
  static fromTransport(transport: RpcTransport, opts: RpcClientOptions = {}): RpcClient {
    return new RpcClient(transport, opts);
  }

  /** Lets an idle connection keep the process alive (the default), or not. */
  ref(): void {
    this.transport.ref?.();
  }

  unref(): void {
    this.transport.unref?.();
  }

  /** Connects to libvirtd's unix socket (no call is made yet). */
  static async connect(path: string = DEFAULT_SOCKET, opts: RpcClientOptions = {}): Promise<RpcClient> {
    const timeoutMs = opts.connectTimeoutMs ?? 5000;
    const address = `libvirt:${path}`;
    const guest = opts.guest !== undefined ? { guest: opts.guest } : {};
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QuiesceError('CONNECT_FAILED', `${address}: connect timed out after ${timeoutMs} ms`, guest));
      }, timeoutMs);
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(
          new QuiesceError('CONNECT_FAILED', `${address}: cannot connect: ${err.message}`, { cause: err, ...guest }),
        );
      });
      s.once('connect', () => {
        clearTimeout(timer);
        s.setNoDelay(true);
        resolve(s);
      });
    });
    return new RpcClient({ stream: socket, address, ref: () => socket.ref(), unref: () => socket.unref() }, opts);
  }

  /** True once the connection is gone (closed by either side or failed). */
  get closed(): boolean {
    return this.ended.reason !== undefined;
  }

  /**
   * Calls one procedure and resolves with the reply's payload (XDR, for the
   * caller to decode). An error reply rejects with LibvirtError; no reply in
   * time rejects with TIMEOUT, after which a late reply is dropped (libvirtd
   * may still complete the call: a timeout says nothing about its outcome).
   */
  call(
    program: number,
    version: number,
    procedure: number,
    args: Uint8Array | undefined,
    opts: CallOptions & { readonly name: string },
  ): Promise<Buffer> {
    if (this.ended.reason) return Promise.reject(this.ended.reason);
    const { name } = opts;
    const serial = this.takeSerial();
    const timeoutMs = opts.timeoutMs ?? this.opts.callTimeoutMs ?? 30_000;
    return awaitReply<Buffer>({
      address: this.address,
      name,
      timeoutMs,
      signal: opts.signal,
      guest: this.opts.guest,
      send: (settle) => {
        this.pending.set(serial, { name, program, procedure, ...settle });
        const header: PacketHeader = {
          program,
          version,
          procedure,
          type: MessageType.Call,
          serial,
          status: MessageStatus.Ok,
        };
        this.socket.write(encodePacket(header, args));
      },
      forget: () => this.pending.delete(serial),
    });
  }

  /** Sends a keepalive PING and resolves with the round trip in ms once the PONG is back. */
  ping(opts: CallOptions = {}): Promise<number> {
    if (this.ended.reason) return Promise.reject(this.ended.reason);
    const timeoutMs = opts.timeoutMs ?? this.opts.callTimeoutMs ?? 30_000;
    const started = performance.now();
    return new Promise<number>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.pongWaiters.delete(onPong);
        this.ended.unlisten(onClose);
      };
      const onPong = (): void => {
        done();
        resolve(performance.now() - started);
      };
      const onClose = (err: QuiesceError): void => {
        done();
        reject(err);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new QuiesceError('TIMEOUT', `${this.address}: no keepalive PONG within ${timeoutMs} ms`, this.guestOpt()),
        );
      }, timeoutMs);
      this.pongWaiters.add(onPong);
      this.ended.listen(onClose);
      this.sendKeepalive(KeepaliveProc.PING);
    });
  }

  /** Calls `listener` with every Message packet (events) from now on; returns the unsubscribe function. */
  onMessage(listener: (m: RpcMessage) => void): () => void {
    this.messageListeners.add(listener);
    return () => this.messageListeners.delete(listener);
  }

  /** Calls `listener` once when the connection ends (at once if it has); returns the unsubscribe function. */
  onClose(listener: (err: QuiesceError) => void): () => void {
    return this.ended.listen(listener);
  }

  /** Closes the socket; pending calls fail with CHANNEL_GONE. */
  close(): void {
    this.ended.end(new QuiesceError('CHANNEL_GONE', `${this.address}: client closed`, this.guestOpt()));
    this.socket.destroy();
  }

  /** Calls in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  private takeSerial(): number {
    // Serials wrap at 2^32; 0 is left to Message packets, and a serial still pending is skipped.
    do {
      this.nextSerial = this.nextSerial >= 0xffff_ffff ? 1 : this.nextSerial + 1;
    } while (this.pending.has(this.nextSerial));
    return this.nextSerial;
  }

  private sendKeepalive(procedure: number): void {
    const header: PacketHeader = {
      program: KEEPALIVE_PROGRAM,
      version: KEEPALIVE_VERSION,
      procedure,
      type: MessageType.Message,
      serial: 0,
      status: MessageStatus.Ok,
    };
    this.socket.write(encodePacket(header));
  }

  private guestOpt(): { guest?: string } {
    return this.opts.guest !== undefined ? { guest: this.opts.guest } : {};
  }

  private gone(reason: string): QuiesceError {
    return new QuiesceError('CHANNEL_GONE', `${this.address}: connection ${reason}`, this.guestOpt());
  }

  private onData(chunk: Buffer): void {
    if (this.ended.reason) return;
    let packets: Packet[];
    try {
      packets = this.decoder.push(chunk);
    } catch (err) {
      const e =
        err instanceof QuiesceError
          ? new QuiesceError(err.code, `${this.address}: ${err.message}; connection closed`, {
              cause: err,
              ...this.guestOpt(),
            })
          : this.gone(String(err));
      this.ended.end(e);
      this.socket.destroy();
      return;
    }
    for (const p of packets) {
      if (this.ended.reason) return;
      this.onPacket(p);
    }
  }

  private onPacket({ header, payload }: Packet): void {
    if (header.type === MessageType.Message) {
      if (header.program === KEEPALIVE_PROGRAM) {
        if (header.procedure === KeepaliveProc.PING) {
          this.sendKeepalive(KeepaliveProc.PONG);
          this.stats.pingsAnswered++;
        } else if (header.procedure === KeepaliveProc.PONG) {
          for (const w of [...this.pongWaiters]) w();
        }
        return;
      }
      const m: RpcMessage = { program: header.program, version: header.version, procedure: header.procedure, payload };
      for (const l of [...this.messageListeners]) {
        // One listener's bug must not stop the others nor the replies behind this packet.
        try {
          l(m);
        } catch {
          /* ignored */
        }
      }
      return;
    }
    if (header.type !== MessageType.Reply && header.type !== MessageType.ReplyWithFds) {
      this.stats.ignoredPackets++;
      return;
    }
    const p = this.pending.get(header.serial);
    if (!p) {
      this.stats.strayReplies++;
      return;
    }
    if (header.program !== p.program || header.procedure !== p.procedure) {
      p.reject(
        new QuiesceError(
          'OUT_OF_SYNC',
          `${this.address}: the reply to ${p.name} (serial ${header.serial}) names program ${hex(header.program)} procedure ${header.procedure}`,
          this.guestOpt(),
        ),
      );
      return;
    }
    // A reply with fds starts with their count; we pass none, so expect none back.
    const body = header.type === MessageType.ReplyWithFds ? payload.subarray(4) : payload;
    if (header.status === MessageStatus.Ok) {
      p.resolve(body);
    } else if (header.status === MessageStatus.Error) {
      try {
        p.reject(new LibvirtError(p.name, readRemoteError(new XdrReader(body)), this.address, this.opts.guest));
      } catch (err) {
        p.reject(
          new QuiesceError(
            'OUT_OF_SYNC',
            `${this.address}: unreadable error reply to ${p.name}: ${(err as Error).message}`,
            {
              cause: err,
              ...this.guestOpt(),
            },
          ),
        );
      }
    } else {
      p.reject(
        new QuiesceError(
          'OUT_OF_SYNC',
          `${this.address}: reply to ${p.name} has status ${header.status}`,
          this.guestOpt(),
        ),
      );
    }
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
