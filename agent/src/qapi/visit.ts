import { firstUnvisited, isQDict, qdictOrder, QNum, type QDict, type QObject } from '../protocol/index.js';
import { QgaError } from './errors.js';
import type { ArgSpec, TypeSpec } from './types.js';

function typeError(name: string, expected: string): QgaError {
  return new QgaError(`Invalid parameter type for '${name}', expected: ${expected}`);
}

/**
 * Checks a command's arguments the way the reference's generated marshallers
 * do: members in schema order, then anything left over is unexpected. Returns
 * the converted values.
 */
export function visitArgs(specs: readonly ArgSpec[], args: QDict): Record<string, unknown> {
  return visitMembers(specs, args, '');
}

/** The members of one dict (the arguments, or a struct whose full name is `prefix` plus a dot). */
function visitMembers(specs: readonly ArgSpec[], dict: QDict, prefix: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (specs.length === 0 && dict.size === 0) return out;
  const visited = new Set<string>();
  for (const spec of specs) {
    const value = dict.get(spec.name);
    if (value === undefined) {
      if (spec.optional) continue;
      throw new QgaError(`Parameter '${prefix}${spec.name}' is missing`);
    }
    visited.add(spec.name);
    out[spec.name] = visitValue(spec.type, value, `${prefix}${spec.name}`);
  }
  if (visited.size < dict.size) {
    const extra = firstUnvisited(qdictOrder([...dict.keys()]), visited);
    if (extra !== undefined) throw new QgaError(`Parameter '${prefix}${extra}' is unexpected`);
  }
  return out;
}

function visitValue(type: TypeSpec, value: QObject, name: string): unknown {
  if (typeof type === 'string') {
    switch (type) {
      case 'str':
        if (typeof value !== 'string') throw typeError(name, 'string');
        return value;
      case 'bool':
        if (typeof value !== 'boolean') throw typeError(name, 'boolean');
        return value;
      case 'number':
        if (!(value instanceof QNum)) throw typeError(name, 'number');
        return value.toNumber();
      case 'int': {
        const int = value instanceof QNum ? value.toInt64() : undefined;
        if (int === undefined) throw typeError(name, 'integer');
        return int;
      }
      case 'uint64': {
        // Any integer that fits int64 or uint64 (a negative one wraps); a double never does.
        if (!(value instanceof QNum) || value.kind === 'double') {
          throw new QgaError(`Parameter '${name}' expects uint64`);
        }
        return BigInt.asUintN(64, value.value as bigint);
      }
    }
  }
  if ('struct' in type) {
    if (!isQDict(value)) throw typeError(name, 'object');
    return visitMembers(type.members, value, `${name}.`);
  }
  if ('list' in type) {
    if (!Array.isArray(value)) throw typeError(name, 'array');
    return value.map((item, i) => visitValue(type.list, item, `${name}[${i}]`));
  }
  if ('enum' in type) {
    if (typeof value !== 'string') throw typeError(name, 'string');
    if (!type.values.includes(value)) {
      throw new QgaError(`Parameter '${name}' does not accept value '${value}'`);
    }
    return value;
  }
  // An alternate of int and an enum.
  if (value instanceof QNum) return visitValue('int', value, name);
  if (typeof value === 'string') return visitValue({ enum: type.alternate, values: type.values }, value, name);
  throw typeError(name, type.alternate);
}
