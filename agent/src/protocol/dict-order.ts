import { toModUtf8 } from './utf8.js';

/**
 * The reference writes and checks object members in the iteration order of
 * QEMU's QDict: 512 hash buckets (tdb hash), newest member first within a
 * bucket. Reproducing it makes our replies byte-identical and makes us report
 * the same member when several are wrong.
 */
const QDICT_BUCKETS = 512;

function tdbHash(key: Uint8Array): number {
  let value = Math.imul(0x238f13af, key.length) >>> 0;
  for (let i = 0; i < key.length; i++) {
    value = (value + ((key[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** Buckets of the keys seen so far: the same few keys make every request and reply. */
const bucketCache = new Map<string, number>();
const BUCKET_CACHE_MAX = 4096;

export function qdictBucket(key: string): number {
  let bucket = bucketCache.get(key);
  if (bucket === undefined) {
    bucket = tdbHash(toModUtf8(key)) % QDICT_BUCKETS;
    if (bucketCache.size < BUCKET_CACHE_MAX && key.length <= 64) bucketCache.set(key, bucket);
  }
  return bucket;
}

/** Keys in QDict iteration order, given keys in insertion order. */
export function qdictOrder(keys: readonly string[]): string[] {
  if (keys.length < 2) return [...keys];
  const withBucket = keys.map((key, index) => ({ key, index, bucket: qdictBucket(key) }));
  withBucket.sort((a, b) => a.bucket - b.bucket || b.index - a.index);
  return withBucket.map((e) => e.key);
}

/**
 * GLib's GHashTable (g_str_hash, open addressing with quadratic probing) as the
 * reference's argument visitor fills it: all argument names inserted in QDict
 * order, visited members removed. Returns the first name left in slot order —
 * the one the reference reports as unexpected.
 */
export function firstUnvisited(keysInQdictOrder: readonly string[], visited: ReadonlySet<string>): string | undefined {
  let shift = 3;
  const mods = [1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];
  const build = (keys: readonly string[]): (string | undefined)[] => {
    const size = 1 << shift;
    const mod = mods[shift] ?? size - 1;
    const slots: (string | undefined)[] = new Array<string | undefined>(size);
    for (const key of keys) {
      let hash = gStrHash(key);
      if (hash < 2) hash = 2;
      let index = Number((BigInt(hash) * 11n) % BigInt(mod));
      let step = 0;
      while (slots[index] !== undefined) {
        step++;
        index = (index + step) & (size - 1);
      }
      slots[index] = key;
    }
    return slots;
  };
  // Grow as GLib does before the table is 15/16 full.
  while (1 << shift <= keysInQdictOrder.length + Math.floor(keysInQdictOrder.length / 16)) shift++;
  const slots = build(keysInQdictOrder);
  return slots.find((k) => k !== undefined && !visited.has(k));
}

function gStrHash(key: string): number {
  let h = 5381;
  for (const b of toModUtf8(key)) {
    // g_str_hash adds bytes as signed char.
    const c = b >= 0x80 ? b - 256 : b;
    h = (Math.imul(h, 33) + c) >>> 0;
  }
  return h;
}
