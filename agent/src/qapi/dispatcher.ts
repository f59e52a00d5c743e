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

/**
 * Holds the registered commands and which are enabled, and runs requests the
 * way the reference's QMP dispatcher does (request shape, lookup, disabled
 * check, argument visit, no reply for success-response false).
 */
export class Dispatcher {
  private readonly commands = new Map<string, CommandDef>();
  private frozen = false;

  constructor(
    commands: readonly CommandDef[],
    private readonly blocked: ReadonlySet<string> = new Set(),
    private readonly allowed: ReadonlySet<string> | undefined = undefined,
  ) {
    for (const c of commands) {
      if (this.commands.has(c.name)) throw new Error(`command ${c.name} registered twice`);
      this.commands.set(c.name, c);
    }
  }

  setFrozen(frozen: boolean): void {
    this.frozen = frozen;
  }

  isFrozen(): boolean {
    return this.frozen;
  }

  names(): string[] {
    return [...this.commands.keys()];
  }

  /** Why a command is disabled: undefined when enabled, null when disabled without a reason. */
  private disabledReason(c: CommandDef): string | null | undefined {
    if (this.frozen && !c.freezeSafe) return FROZEN_REASON;
    if (this.blocked.has(c.name)) return null;
    if (this.allowed && !this.allowed.has(c.name)) return null;
    return undefined;
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
      const visited = visitArgs(command.args ?? [], (args as QDict | undefined) ?? new Map());
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
