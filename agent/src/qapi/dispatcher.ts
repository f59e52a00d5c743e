import { isQDict, qdictOrder, type JsonOut, type QDict, type QObject } from '../protocol/index.js';
import { QgaError } from './errors.js';
import type { CommandDef } from './types.js';
import { visitArgs } from './visit.js';

/** What to send back for one request: a reply body (with the id to echo), or nothing. */
export type Outcome = { reply: { return: JsonOut } | { error: JsonOut }; id: QObject | undefined } | null;

export interface CommandInfo {
  readonly name: string;
  readonly enabled: boolean;
  readonly successResponse: boolean;
}

const FROZEN_REASON = 'the agent is in frozen state';
const NO_ARGS: readonly never[] = [];
const EMPTY: QDict = new Map();

/**
 * Holds the registered commands and which are enabled, and runs requests the
 * way the reference's QMP dispatcher does (request shape, lookup, disabled
 * check, argument visit, no reply for success-response false).
 */
export class Dispatcher {
  private readonly commands = new Map<string, CommandDef>();
  private frozen = false;
  /**
   * Disabled commands and the reason the reference would give: null for -b/-a,
   * the frozen reason for those disabled by a freeze. Kept as state, like the
   * reference's per-command flag, because the order of events decides the text
   * (a blocked command keeps the frozen reason after a thaw; one blocked while
   * starting frozen has none).
   */
  private readonly disabled = new Map<string, string | null>();

  constructor(
    commands: readonly CommandDef[],
    private readonly blocked: ReadonlySet<string> = new Set(),
    private readonly allowed: ReadonlySet<string> | undefined = undefined,
  ) {
    for (const c of commands) {
      if (this.commands.has(c.name)) throw new Error(`command ${c.name} registered twice`);
      this.commands.set(c.name, c);
    }
    this.applyFilters();
  }

  private filtered(name: string): boolean {
    return this.blocked.has(name) || (this.allowed !== undefined && !this.allowed.has(name));
  }

  /** Disables what -b/-a exclude, without a reason. */
  private applyFilters(): void {
    for (const name of this.commands.keys()) if (this.filtered(name)) this.disabled.set(name, null);
  }

  /**
   * Enters or leaves frozen mode. Entering disables every command that is not
   * freeze-safe with the frozen reason; leaving re-enables those -b/-a do not
   * exclude. `atStart` is for an agent that comes up frozen (the marker was
   * there): the reference then applies -b after the freeze, so blocked
   * commands answer without a reason.
   */
  setFrozen(frozen: boolean, atStart = false): void {
    if (frozen === this.frozen) return;
    this.frozen = frozen;
    if (frozen) {
      for (const c of this.commands.values()) if (!c.freezeSafe) this.disabled.set(c.name, FROZEN_REASON);
      if (atStart) this.applyFilters();
      return;
    }
    for (const name of [...this.disabled.keys()]) if (!this.filtered(name)) this.disabled.delete(name);
  }

  isFrozen(): boolean {
    return this.frozen;
  }

  names(): string[] {
    return [...this.commands.keys()];
  }

  /** Why a command is disabled: undefined when enabled, null when disabled without a reason. */
  private disabledReason(c: CommandDef): string | null | undefined {
    return this.disabled.get(c.name);
  }

  /** Every registered command, newest registration first as the reference lists them. */
  info(): CommandInfo[] {
    return [...this.commands.values()].reverse().map((c) => ({
      name: c.name,
      enabled: this.disabledReason(c) === undefined,
      successResponse: c.successResponse !== false,
    }));
  }

  /** Runs one parsed request. `run` receives the command and validated arguments. */
  async dispatch(
    request: QObject,
    run: (command: CommandDef, args: Record<string, unknown>) => Promise<JsonOut | void>,
  ): Promise<Outcome> {
    if (!isQDict(request)) {
      return { reply: { error: errorBody(new QgaError('QMP input must be a JSON object')) }, id: undefined };
    }
    const id = request.get('id');
    try {
      const command = this.lookup(request);
      const args = request.get('arguments');
      const visited = visitArgs(command.args ?? NO_ARGS, (args as QDict | undefined) ?? EMPTY);
      const result = await run(command, visited);
      if (command.successResponse === false) return null;
      return { reply: { return: result ?? {} }, id };
    } catch (err) {
      return { reply: { error: errorBody(err) }, id };
    }
  }

  private lookup(request: QDict): CommandDef {
    let execute: string | undefined;
    for (const key of qdictOrder([...request.keys()])) {
      const value = request.get(key);
      if (key === 'execute') {
        if (typeof value !== 'string') throw new QgaError("QMP input member 'execute' must be a string");
        execute = value;
      } else if (key === 'arguments') {
        if (!isQDict(value)) throw new QgaError("QMP input member 'arguments' must be an object");
      } else if (key !== 'id') {
        throw new QgaError(`QMP input member '${key}' is unexpected`);
      }
    }
    if (execute === undefined) throw new QgaError("QMP input lacks member 'execute'");
    const command = this.commands.get(execute);
    if (!command) throw new QgaError(`The command ${execute} has not been found`, 'CommandNotFound');
    const reason = this.disabledReason(command);
    if (reason !== undefined) {
      throw new QgaError(`Command ${execute} has been disabled${reason ? `: ${reason}` : ''}`, 'CommandNotFound');
    }
    return command;
  }
}

function errorBody(err: unknown): JsonOut {
  if (err instanceof QgaError) return { class: err.errorClass, desc: err.message };
  // A bug in a command must still produce a reply, never take the agent down.
  const text = err instanceof Error ? err.message : String(err);
  return { class: 'GenericError', desc: text };
}
