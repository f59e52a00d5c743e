// libvirt's packet framing: length word + 24-byte header + payload, decoded incrementally from any chunking,
// with lengths too small for a header (OUT_OF_SYNC) or over the limit (REPLY_TOO_LARGE) refused at once.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { QuiesceError } from '../../../src/errors.js';
import {
  DEFAULT_MAX_PACKET_BYTES,
  encodePacket,
  MessageStatus,
  MessageType,
  PacketDecoder,
  type PacketHeader,
} from '../../../src/libvirt/packet.js';
import { REMOTE_PROGRAM, RemoteProc } from '../../../src/libvirt/protocol.js';

const call = (serial: number, procedure: number = RemoteProc.CONNECT_GET_VERSION): PacketHeader => ({
  program: REMOTE_PROGRAM,
  version: 1,
  procedure,
  type: MessageType.Call,
  serial,
  status: MessageStatus.Ok,
});

describe('libvirt packet framing', () => {
  test('a call without payload is exactly 28 bytes: length counts itself, then the header fields in order', () => {
    const bytes = encodePacket(call(7));
    assert.equal(
      bytes.toString('hex'),
      '0000001c' + '20008086' + '00000001' + '00000004' + '00000000' + '00000007' + '00000000',
    );
  });

  test('a payload follows the header and is counted in the length', () => {
    const bytes = encodePacket(call(1), Buffer.from('00000001', 'hex'));
    assert.equal(bytes.readUInt32BE(0), 32);
    const [p] = new PacketDecoder().push(bytes);
    assert.deepEqual(p!.header, call(1));
    assert.equal(p!.payload.toString('hex'), '00000001');
  });

  test('decodes the same packets whatever the chunking: byte by byte, all at once, or split mid-header', () => {
    const stream = Buffer.concat([
      encodePacket(call(1), Buffer.alloc(8, 1)),
      encodePacket(call(2)),
      encodePacket(call(3), Buffer.alloc(1000, 3)),
    ]);
    const splits: number[][] = [
      [],
      [1, 2, 3, 5, 30, 31, 40, 68],
      Array.from({ length: stream.length - 1 }, (_, i) => i + 1),
    ];
    for (const cuts of splits) {
      const d = new PacketDecoder();
      const got: number[] = [];
      let from = 0;
      for (const to of [...cuts, stream.length]) {
        for (const p of d.push(stream.subarray(from, to))) got.push(p.header.serial, p.payload.length);
        from = to;
      }
      assert.deepEqual(got, [1, 8, 2, 0, 3, 1000], `cuts ${cuts.length}`);
      assert.equal(d.pendingBytes, 0);
    }
  });

  test('a length over the limit fails with REPLY_TOO_LARGE before the body arrives, and the decoder stays failed', () => {
    const d = new PacketDecoder(1024);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(4 + 1025);
    const err = (() => {
      try {
        d.push(head);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    assert.ok(err instanceof QuiesceError && err.code === 'REPLY_TOO_LARGE', String(err));
    assert.match(err.message, /1025 bytes exceeds the limit of 1024/);
    assert.throws(() => d.push(encodePacket(call(1))), /exceeds the limit/);
  });

  test('the default limit is 32 MiB: exactly that is accepted as a length, one more byte is not', () => {
    assert.equal(DEFAULT_MAX_PACKET_BYTES, 32 * 1024 * 1024);
    const ok = Buffer.alloc(4);
    ok.writeUInt32BE(4 + DEFAULT_MAX_PACKET_BYTES);
    assert.deepEqual(new PacketDecoder().push(ok), []);
    const big = Buffer.alloc(4);
    big.writeUInt32BE(0xffff_ffff);
    assert.throws(
      () => new PacketDecoder().push(big),
      (e: unknown) => (e as QuiesceError).code === 'REPLY_TOO_LARGE',
    );
  });

  test('a length too small to hold a header is OUT_OF_SYNC', () => {
    for (const n of [0, 4, 27]) {
      const b = Buffer.alloc(28);
      b.writeUInt32BE(n);
      assert.throws(
        () => new PacketDecoder().push(b),
        (e: unknown) =>
          e instanceof QuiesceError && e.code === 'OUT_OF_SYNC' && /shorter than a header/.test(e.message),
        `length ${n}`,
      );
    }
  });

  test('a truncated packet is held, not returned, until the rest arrives', () => {
    const bytes = encodePacket(call(9), Buffer.alloc(64, 9));
    const d = new PacketDecoder();
    assert.deepEqual(d.push(bytes.subarray(0, 50)), []);
    assert.equal(d.pendingBytes, 50);
    assert.equal(d.push(bytes.subarray(50)).length, 1);
  });
});
