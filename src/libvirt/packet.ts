import { QuiesceError } from '../errors.js';
import { XdrReader, XdrWriter } from './xdr.js';

/**
 * libvirt's RPC framing (virnetprotocol.x): every packet is a 4-byte length
 * (counting itself), a 24-byte header and a payload whose XDR type the
 * header's program/procedure/type/status select. No I/O here: a
 * PacketDecoder is fed chunks as they arrive and hands back whole packets.
 */

/** Bytes of the length word. */
export const LENGTH_BYTES = 4;
/** Bytes of the serialised header. */
export const HEADER_BYTES = 24;
/**
 * The largest packet accepted, length word excluded: libvirt's own limit
 * (VIR_NET_MESSAGE_MAX; older daemons used 16 MiB). A bigger length is a
 * corrupt stream or a hostile peer, refused before a byte of it is buffered.
 */
export const DEFAULT_MAX_PACKET_BYTES = 32 * 1024 * 1024;

export const MessageType = {
  /** client → server: a procedure's arguments. */
  Call: 0,
  /** server → client: its result or error, same serial as the call. */
  Reply: 1,
  /** either way, serial 0: an event, or keepalive. */
  Message: 2,
  /** stream data (unused here: no procedure of ours opens a stream). */
  Stream: 3,
  CallWithFds: 4,
  ReplyWithFds: 5,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export const MessageStatus = {
  Ok: 0,
  /** The payload is a remote_error. */
  Error: 1,
  /** Streams only: more data follows. */
  Continue: 2,
} as const;
export type MessageStatus = (typeof MessageStatus)[keyof typeof MessageStatus];

export interface PacketHeader {
  readonly program: number;
  readonly version: number;
  readonly procedure: number;
  /** A MessageType value; anything else is passed on for the client to judge. */
  readonly type: number;
  readonly serial: number;
  readonly status: number;
}

export interface Packet {
  readonly header: PacketHeader;
  /** The XDR payload after the header (a view into the packet's buffer). */
  readonly payload: Buffer;
}

/** Serialises a header and payload into one packet, length word first. */
export function encodePacket(header: PacketHeader, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const w = new XdrWriter(LENGTH_BYTES + HEADER_BYTES + payload.length);
  w.uint(LENGTH_BYTES + HEADER_BYTES + payload.length);
  w.uint(header.program).uint(header.version).int(header.procedure);
  w.int(header.type).uint(header.serial).int(header.status);
  const head = w.toBuffer();
  return payload.length === 0 ? head : Buffer.concat([head, payload]);
}

/** The header of a packet body (the bytes after the length word). */
export function decodeHeader(body: Buffer): PacketHeader {
  const r = new XdrReader(body);
  return {
    program: r.uint(),
    version: r.uint(),
    procedure: r.int(),
    type: r.int(),
    serial: r.uint(),
    status: r.int(),
  };
}

/**
 * Splits a byte stream into packets. A length word that is too small to hold
 * a header (OUT_OF_SYNC) or larger than the limit (REPLY_TOO_LARGE) throws,
 * and the decoder stays failed: a length-prefixed stream cannot resynchronise.
 */
export class PacketDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Length of the packet being assembled (length word included), once its length word is in. */
  private expected: number | undefined;
  private failed: QuiesceError | undefined;

  constructor(private readonly maxPacketBytes = DEFAULT_MAX_PACKET_BYTES) {}

  /** Bytes held for a packet not complete yet. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** Feeds one chunk; returns the packets it completed, in order. */
  push(chunk: Buffer): Packet[] {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: Packet[] = [];
    for (;;) {
      if (this.expected === undefined) {
        if (this.buffered < LENGTH_BYTES) break;
        this.expected = this.checkLength(this.peekLength());
      }
      if (this.buffered < this.expected) break;
      const bytes = this.take(this.expected);
      this.expected = undefined;
      const body = bytes.subarray(LENGTH_BYTES);
      out.push({ header: decodeHeader(body), payload: body.subarray(HEADER_BYTES) });
    }
    return out;
  }

  private checkLength(length: number): number {
    if (length < LENGTH_BYTES + HEADER_BYTES) {
      this.failed = new QuiesceError(
        'OUT_OF_SYNC',
        `libvirt packet length ${length} is shorter than a header (${LENGTH_BYTES + HEADER_BYTES} bytes)`,
      );
      throw this.failed;
    }
    if (length - LENGTH_BYTES > this.maxPacketBytes) {
      this.failed = new QuiesceError(
        'REPLY_TOO_LARGE',
        `libvirt packet of ${length - LENGTH_BYTES} bytes exceeds the limit of ${this.maxPacketBytes}`,
      );
      throw this.failed;
    }
    return length;
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= LENGTH_BYTES) return first.readUInt32BE(0);
    return this.take(LENGTH_BYTES, true).readUInt32BE(0);
  }

  /** Removes (or with `peek`, copies) the first `n` buffered bytes. */
  private take(n: number, peek = false): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (peek) return first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    const joined = Buffer.concat(this.chunks, this.buffered);
    if (peek) {
      this.chunks = [joined];
      return joined.subarray(0, n);
    }
    const rest = joined.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= n;
    return joined.subarray(0, n);
  }
}
