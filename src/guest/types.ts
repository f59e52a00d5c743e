import { DEFAULTS } from '../config/defaults.js';

/** Options for one agent command. */
export interface ExecOptions {
  /** Milliseconds to wait for the reply; defaults per command (see defaultTimeout). */
  readonly timeoutMs?: number;
  /** Abort waiting (the command may still run in the guest). */
  readonly signal?: AbortSignal;
}

/** A connection to one guest's agent: commands one at a time, each with a timeout. */
export interface GuestAgent {
  /** What identifies the guest's channel (socket path, host:port, libvirt URI + domain, "local"). */
  readonly address: string;
  execute(command: string, args?: Record<string, unknown>, opts?: ExecOptions): Promise<unknown>;
  close(): Promise<void>;
  /**
   * True when commands may be sent while others are pending, each matched to its own reply (libvirt:
   * one RPC call per command). Others run one at a time, so sending ahead gains nothing there.
   */
  readonly concurrent?: boolean;
}

/** Commands the protocol defines as sending no reply on success. */
export const NO_REPLY_COMMANDS: ReadonlySet<string> = new Set([
  'guest-shutdown',
  'guest-suspend-disk',
  'guest-suspend-ram',
  'guest-suspend-hybrid',
]);

/** Commands that change nothing in the guest, so a timed-out or lost call can be repeated. */
export const SAFE_TO_RETRY: ReadonlySet<string> = new Set([
  'guest-ping',
  'guest-info',
  'guest-sync',
  'guest-fsfreeze-status',
  'guest-get-fsinfo',
  'guest-network-get-interfaces',
]);

/** Default reply timeouts: a freeze flushes dirty data first, so it gets much longer than a ping. */
export function defaultTimeout(command: string): number {
  switch (command) {
    case 'guest-sync':
    case 'guest-sync-delimited':
      return DEFAULTS.syncMs;
    case 'guest-fsfreeze-freeze':
    case 'guest-fsfreeze-freeze-list':
      return DEFAULTS.timeouts.freezeMs;
    case 'guest-fsfreeze-thaw':
      return DEFAULTS.timeouts.thawMs;
    default:
      return DEFAULTS.timeouts.commandMs;
  }
}
