import { qdictOrder } from './dict-order.js';
import { encode, type JsonOut } from './encoder.js';
import type { QObject } from './qobject.js';

/** The byte both sides use to resynchronise: it resets the agent's parser and prefixes the guest-sync-delimited reply. */
export const SENTINEL = 0xff;

export type ErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

/** An error reply's member. */
export function errorResponse(errorClass: ErrorClass, desc: string): JsonOut {
  return { class: errorClass, desc };
}

/** Whether "id" comes before "return" / "error" in the reply (QDict order, fixed for these keys). */
const ID_FIRST = {
  return: qdictOrder(['return', 'id'])[0] === 'id',
  error: qdictOrder(['error', 'id'])[0] === 'id',
};

/**
 * One reply line: `{"return": X}` or `{"error": {...}}`, with the request's id
 * echoed when it had one, ending in a newline. Written member by member: the
 * two keys' order is known, and the generic object path costs measurable time
 * at the end of every thaw under emulation.
 */
export function encodeResponse(body: { return: JsonOut } | { error: JsonOut }, id: QObject | undefined): string {
  const key = 'return' in body ? 'return' : 'error';
  const member = `"${key}": ${encode('return' in body ? body.return : body.error)}`;
  if (id === undefined) return `{${member}}\n`;
  const idMember = `"id": ${encode(id)}`;
  return ID_FIRST[key] ? `{${idMember}, ${member}}\n` : `{${member}, ${idMember}}\n`;
}
