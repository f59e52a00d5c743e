import { isQDict, QNum, type QObject } from 'quiesce-agent/protocol';

/**
 * A parsed reply value as plain JS: objects (own data properties only, so a
 * guest's "__proto__" key stays a key), integers as numbers when exact, else bigint.
 */
export function toPlain(value: QObject): unknown {
  if (value instanceof QNum) {
    if (value.kind === 'double') return value.value;
    const v = value.value as bigint;
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  if (Array.isArray(value)) return value.map(toPlain);
  if (isQDict(value)) return Object.fromEntries([...value.entries()].map(([k, v]) => [k, toPlain(v)]));
  return value;
}
