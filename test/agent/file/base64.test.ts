import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeBase64, glibDecode } from '../../../agent/src/file/base64.js';

// Decoded lengths observed from qemu-ga 7.2 (guest-file-write's count) and bytes from GLib's algorithm.
const vectors: [string, string][] = [
  ['', ''],
  ['QUJD', '414243'],
  ['QUI=', '4142'],
  ['QQ==', '41'],
  ['WFl', ''],
  ['WA', ''],
  ['W=la', '58095a'],
  ['WF=a', '581a'],
  ['QQ==QQ==', '4141'],
  ['====', '00'],
  ['=', ''],
  ['QR==', '41'],
  ['QUJD\nREVG\n', '414243444546'],
  ['QUJ\nD', '414243'],
  ['\n\n', ''],
  ['QUJDRA', '414243'],
];

for (const [input, hex] of vectors) {
  test(`decodes ${JSON.stringify(input)} as GLib does`, () => {
    assert.equal(decodeBase64(input).toString('hex'), hex);
    assert.equal(glibDecode(input).toString('hex'), hex);
  });
}

for (const bad of ['WF a', 'WF-a', 'WF_a', 'QUJD\t', 'QUJD\r\n', 'QUJD\u00e9', 'QUJD\u0000', '\u2028', 'QUJD!']) {
  test(`refuses ${JSON.stringify(bad)}: only the alphabet, '=' and newline are accepted`, () => {
    assert.throws(() => decodeBase64(bad), { message: 'Base64 data contains invalid characters' });
  });
}

test("the native fast path gives GLib's bytes for any canonical input", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const text = Buffer.from(bytes).toString('base64');
      assert.ok(decodeBase64(text).equals(Buffer.from(bytes)));
      assert.ok(glibDecode(text).equals(Buffer.from(bytes)));
    }),
  );
});

test('any mix of accepted characters decodes exactly as GLib does', () => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n';
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...alphabet.split('')), { maxLength: 60 }), (chars) => {
      const text = chars.join('');
      assert.ok(decodeBase64(text).equals(glibDecode(text)));
    }),
    { numRuns: 2000 },
  );
});
