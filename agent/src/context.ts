import type { AgentConfig } from './config/options.js';
import type { AgentLogEvent } from './log.js';
import type { CommandInfo } from './qapi/dispatcher.js';

/** What commands may use of the agent around them. Commands never touch the transport. */
export interface AgentContext {
  readonly config: AgentConfig;
  readonly version: string;
  readonly log: (event: AgentLogEvent) => void;
  /** Every registered command with whether it is enabled now. */
  commandInfo(): CommandInfo[];
  /** Frozen mode: only freeze-safe commands enabled, nothing written to disk by the agent. */
  isFrozen(): boolean;
  setFrozen(frozen: boolean): void;
  /** The reply to the command being run gets a leading 0xFF (guest-sync-delimited). */
  delimitResponse(): void;
  /** Runs `fn` once the reply to the command running now is written (the thaw's clean-up, off the frozen window). */
  afterReply(fn: () => void): void;
}
