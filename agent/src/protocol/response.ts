import { encode, type JsonOut } from './encoder.js';
import type { QObject } from './qobject.js';

/** The byte both sides use to resynchronise: it resets the agent's parser and prefixes the guest-sync-delimited reply. */
export const SENTINEL = 0xff;

export type ErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

/** An error reply's member. */
export function errorResponse(errorClass: ErrorClass, desc: string): JsonOut {
  return { class: errorClass, desc };
}

/**
 * One reply line: `{"return": X}` or `{"error": {...}}`, with the request's id
 * echoed when it had one, ending in a newline.
 */
export function encodeResponse(body: { return: JsonOut } | { error: JsonOut }, id: QObject | undefined): string {
  const reply: Record<string, JsonOut> = { ...body };
  if (id !== undefined) reply['id'] = id;
  return `${encode(reply)}\n`;
}
