import type { RpcMessage } from './client.js';
import { Limits, REMOTE_PROGRAM, RemoteProc } from './protocol.js';
import { paramsToRecord, readDomain, readString, readTypedParam, type DomainRef, type TypedValue } from './types.js';
import { XdrReader } from './xdr.js';

/**
 * Domain events as they arrive for a callback registered with
 * connect-domain-event-callback-register-any: the Message packets of the
 * remote program, decoded. Events this client does not decode come back as
 * `other` with their procedure number, so a listener can see they happened.
 */
export type DomainEvent =
  | {
      readonly kind: 'lifecycle';
      readonly callbackId: number;
      readonly domain: DomainRef;
      /** A LifecycleEvent value (defined, started, stopped, …). */
      readonly event: number;
      /** Its detail (virDomainEvent*DetailType of that event). */
      readonly detail: number;
    }
  | {
      /** VIR_DOMAIN_EVENT_ID_BLOCK_JOB (path names the disk's source) or BLOCK_JOB_2 (target, e.g. `vda`). */
      readonly kind: 'block-job';
      readonly callbackId: number;
      readonly domain: DomainRef;
      readonly disk: string;
      /** A BlockJobType value. */
      readonly type: number;
      /** A BlockJobStatus value. */
      readonly status: number;
      readonly v2: boolean;
    }
  | {
      /** A domain job (backup, migration, …) ended, successfully or not: read `stats`. */
      readonly kind: 'job-completed';
      readonly callbackId: number;
      readonly domain: DomainRef;
      readonly stats: Readonly<Record<string, TypedValue>>;
    }
  | {
      readonly kind: 'agent-lifecycle';
      readonly callbackId: number;
      readonly domain: DomainRef;
      /** 1 connected, 2 disconnected. */
      readonly state: number;
      readonly reason: number;
    }
  | { readonly kind: 'other'; readonly procedure: number };

/** Decodes one Message packet of the remote program; undefined for any other program. Throws XdrError on bad bytes. */
export function decodeDomainEvent(m: RpcMessage): DomainEvent | undefined {
  if (m.program !== REMOTE_PROGRAM) return undefined;
  const r = new XdrReader(m.payload);
  let e: DomainEvent;
  switch (m.procedure) {
    case RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE:
      e = { kind: 'lifecycle', callbackId: r.int(), domain: readDomain(r), event: r.int(), detail: r.int() };
      break;
    case RemoteProc.DOMAIN_EVENT_CALLBACK_BLOCK_JOB:
    case RemoteProc.DOMAIN_EVENT_BLOCK_JOB_2:
      // The same fields; BLOCK_JOB_2 names the disk by target (vda) instead of by path.
      e = {
        kind: 'block-job',
        callbackId: r.int(),
        domain: readDomain(r),
        disk: readString(r),
        type: r.int(),
        status: r.int(),
        v2: m.procedure === RemoteProc.DOMAIN_EVENT_BLOCK_JOB_2,
      };
      break;
    case RemoteProc.DOMAIN_EVENT_CALLBACK_JOB_COMPLETED:
      e = {
        kind: 'job-completed',
        callbackId: r.int(),
        domain: readDomain(r),
        stats: paramsToRecord(r.array(readTypedParam, Limits.JOB_STATS)),
      };
      break;
    case RemoteProc.DOMAIN_EVENT_CALLBACK_AGENT_LIFECYCLE:
      e = { kind: 'agent-lifecycle', callbackId: r.int(), domain: readDomain(r), state: r.int(), reason: r.int() };
      break;
    default:
      return { kind: 'other', procedure: m.procedure };
  }
  r.end(`event ${m.procedure}`);
  return e;
}
