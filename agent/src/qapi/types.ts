import type { JsonOut } from '../protocol/index.js';
import type { AgentContext } from '../context.js';

/** A QAPI type as the argument visitor checks it. */
export type TypeSpec =
  | 'str'
  | 'int'
  | 'bool'
  | 'number'
  /** uint64: a negative int64 is accepted and wraps, as the reference's visitor does. */
  | 'uint64'
  | { readonly list: TypeSpec }
  /** A struct: members visited in schema order, then anything left over is unexpected. */
  | { readonly struct: string; readonly members: readonly ArgSpec[] }
  | { readonly enum: string; readonly values: readonly string[] }
  /** An alternate of int and an enum (like GuestFileWhence). */
  | { readonly alternate: string; readonly values: readonly string[] };

export interface ArgSpec {
  readonly name: string;
  readonly type: TypeSpec;
  readonly optional?: boolean;
}

/** One command of the schema: its arguments, reply rules and implementation. */
export interface CommandDef {
  readonly name: string;
  readonly args?: readonly ArgSpec[];
  /** False for commands that send no reply on success (shutdown, suspend). */
  readonly successResponse?: boolean;
  /** Stays enabled while filesystems are frozen. */
  readonly freezeSafe?: boolean;
  /**
   * Registered but not available on this platform: always disabled, as the
   * reference's built-in block list (ga_command_init_blockedrpcs) makes it,
   * whatever -b/-a say (guest-get-devices on Linux).
   */
  readonly unsupported?: boolean;
  /** Validated arguments: str → string, int and uint64 → bigint, bool → boolean, number → number, lists → arrays, structs → plain objects. */
  readonly run: (args: Record<string, unknown>, ctx: AgentContext) => JsonOut | void | Promise<JsonOut | void>;
}

/** A family of commands with state of its own (open files, freeze state, …). */
export interface CommandFamily {
  readonly commands: readonly CommandDef[];
  /** Runs first when the agent stops, before the transport closes (fsfreeze thaws here). */
  prepareStop?(): void | Promise<void>;
  /** Releases what the family holds when the agent stops. */
  close?(): void | Promise<void>;
  /** After a bug, the process about to end: undo at once, synchronously, what must not outlive it. */
  crash?(): void;
}
