import { readFileSync } from 'node:fs';
import { INT64_MAX } from '../protocol/index.js';

/** GuestNetworkInterfaceStat (7.2): counters from /proc/net/dev, members in schema order. */
export type InterfaceStats = {
  readonly 'rx-bytes': bigint;
  readonly 'rx-packets': bigint;
  readonly 'rx-errs': bigint;
  readonly 'rx-dropped': bigint;
  readonly 'tx-bytes': bigint;
  readonly 'tx-packets': bigint;
  readonly 'tx-errs': bigint;
  readonly 'tx-dropped': bigint;
};

/**
 * Parses /proc/net/dev as the reference does: a line whose text before the
 * first ':' (leading blanks removed) is the name, then sixteen numbers read
 * with %lld (so a counter past INT64_MAX reads as INT64_MAX).
 */
export function parseProcNetDev(text: string): Map<string, InterfaceStats> {
  const out = new Map<string, InterfaceStats>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\s+/, '');
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon);
    if (out.has(name)) continue;
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    if (fields.length < 16 || !fields.slice(0, 16).every((f) => /^[+-]?\d+$/.test(f))) continue;
    const n = fields.map((f) => {
      const v = BigInt(f);
      return v > INT64_MAX ? INT64_MAX : v;
    });
    out.set(name, {
      'rx-bytes': n[0]!,
      'rx-packets': n[1]!,
      'rx-errs': n[2]!,
      'rx-dropped': n[3]!,
      'tx-bytes': n[8]!,
      'tx-packets': n[9]!,
      'tx-errs': n[10]!,
      'tx-dropped': n[11]!,
    });
  }
  return out;
}

export function readProcNetDev(path = '/proc/net/dev'): Map<string, InterfaceStats> {
  try {
    return parseProcNetDev(readFileSync(path, 'utf8'));
  } catch {
    // The reference leaves statistics out when the file cannot be read.
    return new Map();
  }
}
