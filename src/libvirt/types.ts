import { Limits, TypedParamType } from './protocol.js';
import { XdrError, type XdrReader, type XdrWriter } from './xdr.js';

/**
 * The structs remote_protocol.x shares between procedures (domain, snapshot
 * and checkpoint handles, typed parameters) with their encoders and decoders.
 */

/** remote_nonnull_domain: how every domain call names its domain. */
export interface DomainRef {
  readonly name: string;
  /** 16 raw bytes. */
  readonly uuid: Buffer;
  /** The running domain's id; -1 when it is not running. */
  readonly id: number;
}

/** remote_nonnull_domain_snapshot */
export interface SnapshotRef {
  readonly name: string;
  readonly domain: DomainRef;
}

/** remote_nonnull_domain_checkpoint */
export interface CheckpointRef {
  readonly name: string;
  readonly domain: DomainRef;
}

export const UUID_BYTES = 16;

export function writeString(w: XdrWriter, s: string): void {
  w.string(s, Limits.STRING);
}

export function readString(r: XdrReader): string {
  return r.string(Limits.STRING);
}

/** remote_string: a string that may be absent. */
export function writeOptString(w: XdrWriter, s: string | undefined): void {
  w.optional(s, writeString);
}

export function readOptString(r: XdrReader): string | undefined {
  return r.optional(readString);
}

export function writeDomain(w: XdrWriter, d: DomainRef): void {
  w.string(d.name, Limits.STRING);
  w.fixedOpaque(d.uuid, UUID_BYTES);
  w.int(d.id);
}

export function readDomain(r: XdrReader): DomainRef {
  return { name: r.string(Limits.STRING), uuid: r.fixedOpaque(UUID_BYTES), id: r.int() };
}

export function writeSnapshot(w: XdrWriter, s: SnapshotRef): void {
  w.string(s.name, Limits.STRING);
  writeDomain(w, s.domain);
}

export function readSnapshot(r: XdrReader): SnapshotRef {
  return { name: r.string(Limits.STRING), domain: readDomain(r) };
}

export const writeCheckpoint: (w: XdrWriter, c: CheckpointRef) => void = writeSnapshot;
export const readCheckpoint: (r: XdrReader) => CheckpointRef = readSnapshot;

/** The canonical text form of a domain's UUID (as `virsh domuuid` prints it). */
export function uuidString(uuid: Buffer): string {
  const h = uuid.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * A typed parameter's value (remote_typed_param_value): 64-bit integers stay
 * bigint so a byte count above 2^53 is not rounded.
 */
export type TypedValue = number | bigint | boolean | string;

/** remote_typed_param: a named, typed value (job statistics, event details). */
export interface TypedParam {
  readonly field: string;
  /** A TypedParamType value. */
  readonly type: number;
  readonly value: TypedValue;
}

export function readTypedParam(r: XdrReader): TypedParam {
  const field = r.string(Limits.STRING);
  const type = r.int();
  let value: TypedValue;
  switch (type) {
    case TypedParamType.INT:
      value = r.int();
      break;
    case TypedParamType.UINT:
      value = r.uint();
      break;
    case TypedParamType.LLONG:
      value = r.hyper();
      break;
    case TypedParamType.ULLONG:
      value = r.uhyper();
      break;
    case TypedParamType.DOUBLE:
      value = r.double();
      break;
    case TypedParamType.BOOLEAN:
      value = r.int() !== 0;
      break;
    case TypedParamType.STRING:
      value = r.string(Limits.STRING);
      break;
    default:
      // The union has no default arm: an unknown type leaves the rest of the payload unreadable.
      throw new XdrError(`typed parameter ${JSON.stringify(field)} has unknown type ${type}`);
  }
  return { field, type, value };
}

export function writeTypedParam(w: XdrWriter, p: TypedParam): void {
  w.string(p.field, Limits.STRING);
  w.int(p.type);
  const v = p.value;
  switch (p.type) {
    case TypedParamType.INT:
      w.int(Number(v));
      break;
    case TypedParamType.UINT:
      w.uint(Number(v));
      break;
    case TypedParamType.LLONG:
      w.hyper(BigInt(v as number | bigint));
      break;
    case TypedParamType.ULLONG:
      w.uhyper(BigInt(v as number | bigint));
      break;
    case TypedParamType.DOUBLE:
      w.double(Number(v));
      break;
    case TypedParamType.BOOLEAN:
      w.int(v ? 1 : 0);
      break;
    case TypedParamType.STRING:
      w.string(String(v), Limits.STRING);
      break;
    default:
      throw new RangeError(`typed parameter ${p.field}: unknown type ${p.type}`);
  }
}

/** Typed parameters as a plain object keyed by field (a repeated field keeps its last value). */
export function paramsToRecord(params: readonly TypedParam[]): Record<string, TypedValue> {
  const out: Record<string, TypedValue> = {};
  for (const p of params) out[p.field] = p.value;
  return out;
}
