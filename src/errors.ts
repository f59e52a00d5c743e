/** Stable codes for every failure the host reports; the CLI maps them to exit codes in one table. */
export type ErrorCode =
  | 'AGENT_ERROR'
  | 'TIMEOUT'
  | 'CHANNEL_GONE'
  | 'OUT_OF_SYNC'
  | 'LOCKED'
  | 'REPLY_TOO_LARGE'
  /** A command too large for the channel it would go through; refused before a byte was sent. */
  | 'COMMAND_TOO_LARGE'
  | 'CONNECT_FAILED'
  | 'COMMAND_UNAVAILABLE'
  | 'CONFIG'
  | 'ALREADY_FROZEN'
  | 'CONFIG_MISMATCH'
  | 'FREEZE_INCOMPLETE'
  | 'THAW_UNPROVEN'
  | 'STEP_FAILED'
  | 'BUDGET_EXCEEDED'
  | 'INTERRUPTED'
  /** QEMU's monitor (QMP) answered a command with an error. */
  | 'QMP_ERROR'
  /** A QEMU block job (a backup copy) failed, was cancelled or did not finish in time. */
  | 'BLOCK_JOB_FAILED'
  /** The journal record could not be made durable: nothing is frozen without one. */
  | 'JOURNAL'
  /** The run report or the metrics file could not be written. */
  | 'REPORT_WRITE'
  /** A backup repository (its folders, manifests, images) is unreadable, inconsistent, or cannot be written. */
  | 'REPOSITORY';

/** The one error base of the host: a stable `code`, the guest it concerns, and the underlying `cause`. */
export class QuiesceError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options: { cause?: unknown; guest?: string | undefined } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QuiesceError';
    this.guest = options.guest;
  }
  readonly guest: string | undefined;
}

/** The agent answered with an error reply. */
export class AgentError extends QuiesceError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
    guest?: string,
  ) {
    super('AGENT_ERROR', `${command}: ${desc}${errorClass !== 'GenericError' ? ` (${errorClass})` : ''}`, { guest });
    this.name = 'AgentError';
  }
}
