// XDR primitives (RFC 4506) as libvirt's RPC uses them: exact bytes for each type, round trips, and a decoder
// that refuses truncated or absurd input with XdrError before allocating anything.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { XdrError, XdrReader, XdrWriter } from '../../../src/libvirt/xdr.js';

const hex = (b: Buffer): string => b.toString('hex');

describe('XDR encoding', () => {
  const cases: [string, (w: XdrWriter) => void, string][] = [
    ['int -1 is two’s complement, big-endian', (w) => w.int(-1), 'ffffffff'],
    ['unsigned int', (w) => w.uint(0x20008086), '20008086'],
    ['hyper', (w) => w.hyper(-2n), 'fffffffffffffffe'],
    ['unsigned hyper', (w) => w.uhyper(7002022n), '00000000006ad7a6'],
    ['bool', (w) => w.bool(true).bool(false), '0000000100000000'],
    ['double', (w) => w.double(1.5), '3ff8000000000000'],
    ['string padded to 4 with zeros', (w) => w.string('abcde'), '000000056162636465000000'],
    ['string of a multiple of 4 has no padding', (w) => w.string('abcd'), '0000000461626364'],
    ['empty string', (w) => w.string(''), '00000000'],
    ['UTF-8 string counts bytes', (w) => w.string('é'), '00000002c3a90000'],
    ['var opaque', (w) => w.opaque(Buffer.from([1, 2, 3])), '0000000301020300'],
    ['fixed opaque has no length word', (w) => w.fixedOpaque(Buffer.from([9, 8]), 2), '09080000'],
    ['absent optional', (w) => w.optional(undefined, (x, v: number) => x.int(v)), '00000000'],
    ['present optional', (w) => w.optional(7, (x, v) => x.int(v)), '0000000100000007'],
    [
      'array of strings',
      (w) => w.array(['a', 'bc'], (x, v) => x.string(v)),
      '00000002000000016100000000000002' + '62630000',
    ],
  ];
  for (const [title, write, bytes] of cases) {
    test(title, () => {
      const w = new XdrWriter(1);
      write(w);
      assert.equal(hex(w.toBuffer()), bytes);
      assert.equal(w.length, bytes.length / 2);
    });
  }

  test('values out of range are the caller’s bug: RangeError, nothing written', () => {
    const w = new XdrWriter();
    assert.throws(() => w.int(2 ** 31), RangeError);
    assert.throws(() => w.int(1.5), RangeError);
    assert.throws(() => w.uint(-1), RangeError);
    assert.throws(() => w.uhyper(-1n), RangeError);
    assert.throws(() => w.hyper(2n ** 63n), RangeError);
    assert.throws(() => w.string('abcdef', 5), RangeError);
    assert.throws(() => w.fixedOpaque(Buffer.alloc(3), 16), RangeError);
    assert.throws(() => w.array([1, 2, 3], (x, v) => x.int(v), 2), RangeError);
    assert.equal(w.length, 0);
  });
});

describe('XDR decoding', () => {
  test('reads back every type in order and ends exactly', () => {
    const w = new XdrWriter();
    w.int(-5)
      .uint(4_000_000_000)
      .hyper(-(2n ** 40n))
      .uhyper(2n ** 64n - 1n)
      .bool(true)
      .double(-0.25);
    w.string('héllo').opaque(Buffer.from('xyz')).fixedOpaque(Buffer.alloc(16, 7), 16);
    w.optional('x', (x, v) => x.string(v)).optional(undefined, (x, v: string) => x.string(v));
    w.array([1, 2, 3], (x, v) => x.int(v));
    const r = new XdrReader(w.toBuffer());
    assert.equal(r.int(), -5);
    assert.equal(r.uint(), 4_000_000_000);
    assert.equal(r.hyper(), -(2n ** 40n));
    assert.equal(r.uhyper(), 2n ** 64n - 1n);
    assert.equal(r.bool(), true);
    assert.equal(r.double(), -0.25);
    assert.equal(r.string(), 'héllo');
    assert.deepEqual(r.opaque(), Buffer.from('xyz'));
    assert.deepEqual(r.fixedOpaque(16), Buffer.alloc(16, 7));
    assert.equal(
      r.optional((x) => x.string()),
      'x',
    );
    assert.equal(
      r.optional((x) => x.string()),
      undefined,
    );
    assert.deepEqual(
      r.array((x) => x.int()),
      [1, 2, 3],
    );
    r.end();
  });

  const bad: [string, string, (r: XdrReader) => unknown, RegExp][] = [
    ['an int cut short', '000000', (r) => r.int(), /truncated: int needs 4 bytes/],
    ['a string longer than the buffer', '0000000a6162', (r) => r.string(), /truncated: string needs 12 bytes/],
    ['a string over its limit', '0000000561626364650000', (r) => r.string(4), /string of 5 bytes exceeds its limit 4/],
    ['a string missing its padding', '000000056162636465', (r) => r.string(), /truncated/],
    ['a bool that is 2', '00000002', (r) => r.bool(), /bool is 2/],
    ['an optional discriminant of 7', '00000007', (r) => r.optional((x) => x.int()), /discriminant is 7/],
    ['an array over its limit', '00000005', (r) => r.array((x) => x.int(), 4), /5 items exceeds its limit 4/],
    [
      'a billion-item array in 8 bytes (refused before reading any item)',
      '3b9aca0000000000',
      (r) => r.array((x) => x.int()),
      /1000000000 items cannot fit/,
    ],
    ['a 4 GiB opaque length', 'ffffffff', (r) => r.opaque(), /truncated: opaque needs 4294967296 bytes/],
  ];
  for (const [title, bytes, read, message] of bad) {
    test(`refuses ${title} with XdrError (OUT_OF_SYNC)`, () => {
      const err = (() => {
        try {
          read(new XdrReader(Buffer.from(bytes, 'hex')));
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      assert.ok(err instanceof XdrError, String(err));
      assert.equal(err.code, 'OUT_OF_SYNC');
      assert.match(err.message, message);
    });
  }

  test('end() refuses unread bytes', () => {
    const r = new XdrReader(Buffer.from('0000000100000002', 'hex'));
    r.int();
    assert.throws(() => r.end('reply'), /4 unread bytes after the reply/);
  });

  test('decoded opaques and strings do not alias the packet buffer', () => {
    const buf = Buffer.from('00000003616263000000000201020000', 'hex');
    const r = new XdrReader(buf);
    r.string();
    const o = r.opaque();
    buf.fill(0);
    assert.deepEqual(o, Buffer.from([1, 2]));
  });

  test('property: whatever is written reads back the same', () => {
    const item = fc.oneof(
      fc.record({ t: fc.constant('int' as const), v: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }),
      fc.record({ t: fc.constant('uint' as const), v: fc.integer({ min: 0, max: 2 ** 32 - 1 }) }),
      fc.record({ t: fc.constant('hyper' as const), v: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) }),
      fc.record({ t: fc.constant('string' as const), v: fc.string({ unit: 'binary', maxLength: 40 }) }),
      fc.record({ t: fc.constant('opaque' as const), v: fc.uint8Array({ maxLength: 40 }) }),
      fc.record({ t: fc.constant('opt' as const), v: fc.option(fc.string({ maxLength: 9 }), { nil: undefined }) }),
    );
    fc.assert(
      fc.property(fc.array(item, { maxLength: 20 }), (items) => {
        const w = new XdrWriter(4);
        for (const it of items) {
          if (it.t === 'int') w.int(it.v);
          else if (it.t === 'uint') w.uint(it.v);
          else if (it.t === 'hyper') w.hyper(it.v);
          else if (it.t === 'string') w.string(it.v);
          else if (it.t === 'opaque') w.opaque(it.v);
          else w.optional(it.v, (x, v) => x.string(v));
        }
        const buf = w.toBuffer();
        assert.equal(buf.length % 4, 0);
        const r = new XdrReader(buf);
        for (const it of items) {
          if (it.t === 'int') assert.equal(r.int(), it.v);
          else if (it.t === 'uint') assert.equal(r.uint(), it.v);
          else if (it.t === 'hyper') assert.equal(r.hyper(), it.v);
          else if (it.t === 'string') assert.equal(r.string(), Buffer.from(it.v, 'utf8').toString('utf8'));
          else if (it.t === 'opaque') assert.deepEqual(new Uint8Array(r.opaque()), it.v);
          else
            assert.equal(
              r.optional((x) => x.string()),
              it.v,
            );
        }
        r.end();
      }),
    );
  });

  test('property: random bytes never throw anything but XdrError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const r = new XdrReader(Buffer.from(bytes));
        try {
          r.string(1000);
          r.optional((x) => x.array((y) => y.opaque(100), 10));
          r.hyper();
        } catch (e) {
          assert.ok(e instanceof XdrError, String(e));
        }
      }),
    );
  });
});
