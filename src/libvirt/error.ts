import { QuiesceError, type ErrorCode } from '../errors.js';
import type { XdrReader } from './xdr.js';

/**
 * libvirt's error numbers (virterror.h, `virErrorNumber`) that callers act
 * on. The wire carries the number; these names are for code that tests it.
 */
export const VirErr = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  XML_ERROR: 27,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  ARGUMENT_UNSUPPORTED: 67,
  OPERATION_TIMEOUT: 68,
  NO_DOMAIN_SNAPSHOT: 72,
  OPERATION_UNSUPPORTED: 84,
  AGENT_UNRESPONSIVE: 86,
  AGENT_UNSYNCED: 97,
  NO_DOMAIN_CHECKPOINT: 103,
  NO_DOMAIN_BACKUP: 104,
  CHECKPOINT_INCONSISTENT: 109,
  AGENT_COMMAND_TIMEOUT: 112,
  AGENT_COMMAND_FAILED: 113,
} as const;

/** Where in libvirt an error arose (virterror.h, `virErrorDomain`); a few that matter here. */
export const VirFrom = {
  NONE: 0,
  RPC: 7,
  QEMU: 10,
  REMOTE: 13,
  DOMAIN: 20,
} as const;

/** The wire form of libvirt's error (remote_error in remote_protocol.x). */
export interface RemoteError {
  readonly code: number;
  readonly domain: number;
  readonly message: string | undefined;
  readonly level: number;
  readonly str1: string | undefined;
  readonly str2: string | undefined;
  readonly str3: string | undefined;
  readonly int1: number;
  readonly int2: number;
}

// remote_string is a pointer to a string bounded by REMOTE_STRING_MAX (4 MiB).
const STRING_MAX = 4 * 1024 * 1024;

/** Reads a remote_error payload (the body of a reply whose status is Error). */
export function readRemoteError(r: XdrReader): RemoteError {
  const str = (): string | undefined => r.optional((x) => x.string(STRING_MAX));
  // The dom and net members are unused by libvirt but still on the wire.
  const skipDomain = (): void => {
    r.optional((x) => {
      x.string(STRING_MAX);
      x.fixedOpaque(16);
      x.int();
    });
  };
  const code = r.int();
  const domain = r.int();
  const message = str();
  const level = r.int();
  skipDomain();
  const str1 = str();
  const str2 = str();
  const str3 = str();
  const int1 = r.int();
  const int2 = r.int();
  r.optional((x) => {
    x.string(STRING_MAX);
    x.fixedOpaque(16);
  });
  return { code, domain, message, level, str1, str2, str3, int1, int2 };
}

/**
 * Our error code for one of libvirt's: its timeouts are TIMEOUT, an agent
 * that is not there is CHANNEL_GONE, a refused connection is CONNECT_FAILED,
 * anything else libvirt (or the agent behind it) refused is AGENT_ERROR.
 */
export function errorCodeFor(virCode: number): ErrorCode {
  switch (virCode) {
    case VirErr.OPERATION_TIMEOUT:
    case VirErr.AGENT_COMMAND_TIMEOUT:
      return 'TIMEOUT';
    case VirErr.AGENT_UNRESPONSIVE:
    case VirErr.AGENT_UNSYNCED:
      return 'CHANNEL_GONE';
    case VirErr.NO_CONNECT:
    case VirErr.AUTH_FAILED:
      return 'CONNECT_FAILED';
    default:
      return 'AGENT_ERROR';
  }
}

/**
 * libvirt answered a call with an error. `message` is libvirt's own text
 * (what virsh prints after "error: "); `virCode`/`virDomain` are its
 * numbers (VirErr, VirFrom) so callers never match on text.
 */
export class LibvirtError extends QuiesceError {
  readonly virCode: number;
  readonly virDomain: number;
  readonly level: number;
  /** The procedure that failed (`domain-lookup-by-name`, …). */
  readonly procedure: string;
  readonly detail: RemoteError;

  constructor(procedure: string, e: RemoteError, address: string, guest?: string) {
    super(
      errorCodeFor(e.code),
      `${address}: ${procedure}: ${e.message ?? `libvirt error ${e.code} (no message)`}`,
      guest === undefined ? {} : { guest },
    );
    this.name = 'LibvirtError';
    this.virCode = e.code;
    this.virDomain = e.domain;
    this.level = e.level;
    this.procedure = procedure;
    this.detail = e;
  }

  /** libvirt's message alone, without our address and procedure prefix. */
  get libvirtMessage(): string {
    return this.detail.message ?? '';
  }
}
