/**
 * The value model the reference agent uses (QEMU's QObject): JSON values where
 * numbers keep the distinction between int64, uint64 and double, and objects
 * keep insertion order (their output order is derived from it, see dict-order).
 */
export type QObject = null | boolean | string | QNum | QObject[] | QDict;
export type QDict = Map<string, QObject>;

/** A JSON number as the reference parses it: int64 if it fits, else uint64, else double. */
export class QNum {
  constructor(
    readonly kind: 'int' | 'uint' | 'double',
    readonly value: bigint | number,
  ) {}

  static int(value: bigint): QNum {
    return new QNum('int', value);
  }

  /** The value as int64, or undefined when it is not one (a double, or a uint64 above INT64_MAX). */
  toInt64(): bigint | undefined {
    if (this.kind === 'double') return undefined;
    const v = this.value as bigint;
    return v <= INT64_MAX ? v : undefined;
  }

  toNumber(): number {
    return Number(this.value);
  }
}

export const INT64_MAX = (1n << 63n) - 1n;
export const INT64_MIN = -(1n << 63n);
export const UINT64_MAX = (1n << 64n) - 1n;

export function isQDict(v: unknown): v is QDict {
  return v instanceof Map;
}
