import { QgaError } from '../qapi/errors.js';

/**
 * Base64 as the reference decodes guest-file-write payloads: QEMU's
 * qbase64_decode() accepts only the alphabet, '=' and '\n' (anything else is
 * "Base64 data contains invalid characters"), then GLib's g_base64_decode()
 * does the work with its lenient rules: no length check, '=' anywhere, a
 * trailing partial group dropped. Canonical input takes Node's native decoder;
 * the rest goes through a port of g_base64_decode_step().
 */
const ACCEPTED = /^[A-Za-z0-9+/=\n]*$/;

export function decodeBase64(text: string): Buffer {
  const fast = decodeCanonical(text);
  if (fast) return fast;
  if (!ACCEPTED.test(text)) throw new QgaError('Base64 data contains invalid characters');
  if (text.includes('\n')) {
    // MIME-style line breaks: GLib skips them; without them the input may be canonical.
    const joined = decodeCanonical(text.replace(/\n/g, ''));
    if (joined) return joined;
  }
  return glibDecode(text);
}

/**
 * Node's decoder when the text is exactly what Node's encoder would write for
 * the bytes (then both decoders agree). Checking by encoding again is several
 * times faster than a regular expression over megabytes of payload.
 */
function decodeCanonical(text: string): Buffer | undefined {
  const buf = Buffer.from(text, 'base64');
  return buf.toString('base64') === text ? buf : undefined;
}

const RANK = new Uint8Array(256).fill(0xff);
'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.split('').forEach((c, i) => {
  RANK[c.charCodeAt(0)] = i;
});
// GLib ranks '=' as 0: it counts as a digit and only suppresses output bytes.
RANK[0x3d] = 0;

/** GLib's g_base64_decode_step() for one whole input (state starts at zero). */
export function glibDecode(text: string): Buffer {
  const out = Buffer.allocUnsafe(Math.floor(text.length / 4) * 3);
  let o = 0;
  let v = 0;
  let i = 0;
  let last0 = 0;
  let last1 = 0;
  for (let p = 0; p < text.length; p++) {
    const c = text.charCodeAt(p);
    const rank = c < 256 ? RANK[c]! : 0xff;
    if (rank === 0xff) continue;
    last1 = last0;
    last0 = c;
    v = ((v << 6) | rank) & 0xffffff;
    if (++i === 4) {
      out[o++] = (v >> 16) & 0xff;
      if (last1 !== 0x3d) out[o++] = (v >> 8) & 0xff;
      if (last0 !== 0x3d) out[o++] = v & 0xff;
      i = 0;
    }
  }
  return out.subarray(0, o);
}
