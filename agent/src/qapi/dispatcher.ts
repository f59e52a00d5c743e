import { isQDict, qdictOrder, type JsonOut, type QDict, type QObject } from '../protocol/index.js';
import { QgaError } from './errors.js';
import type { MaybePromise } from '../maybe-promise.js';
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
   * The commands -b/-a exclude, and the reason the reference would give for
   * each: none at first, the frozen reason once a freeze has disabled them. It
   * is state, like the reference's per-command flag, because the order of
   * events decides the text (a blocked command keeps the frozen reason after
   * a thaw; one blocked while starting frozen has none). The other commands
   * are disabled by the frozen flag alone, so entering and leaving frozen mode
   * touches no per-command state unless -b/-a are given.
   */
  private readonly filtered = new Map<string, string | null>();

  constructor(
    commands: readonly CommandDef[],
    blocked: ReadonlySet<string> = new Set(),
    allowed: ReadonlySet<string> | undefined = undefined,
  ) {
    for (const c of commands) {
      if (this.commands.has(c.name)) throw new Error(`command ${c.name} registered twice`);
      this.commands.set(c.name, c);
      if (c.unsupported || blocked.has(c.name) || (allowed !== undefined && !allowed.has(c.name))) {
        this.filtered.set(c.name, null);
      }
    }
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
    if (!frozen) return;
    for (const name of this.filtered.keys()) {
      if (atStart) this.filtered.set(name, null);
      else if (!this.commands.get(name)!.freezeSafe) this.filtered.set(name, FROZEN_REASON);
    }
  }

  isFrozen(): boolean {
    return this.frozen;
  }

  names(): string[] {
    return [...this.commands.keys()];
  }

  /** Why a command is disabled: undefined when enabled, null when disabled without a reason. */
  private disabledReason(c: CommandDef): string | null | undefined {
    if (this.filtered.has(c.name)) return this.filtered.get(c.name);
    return this.frozen && !c.freezeSafe ? FROZEN_REASON : undefined;
  }

  /** Every registered command, newest registration first as the reference lists them. */
  info(): CommandInfo[] {
    return [...this.commands.values()].reverse().map((c) => ({
      name: c.name,
      enabled: this.disabledReason(c) === undefined,
      successResponse: c.successResponse !== false,
    }));
  }

  /**
   * Runs one parsed request. `run` receives the command and validated
   * arguments. A command that answers synchronously gets its outcome back
   * synchronously (the thaw, so that its reply leaves in the same turn).
   */
  dispatch(
    request: QObject,
    run: (command: CommandDef, args: Record<string, unknown>) => MaybePromise<JsonOut | void>,
  ): MaybePromise<Outcome> {
    if (!isQDict(request)) {
      return { reply: { error: errorBody(new QgaError('QMP input must be a JSON object')) }, id: undefined };
    }
    const id = request.get('id');
    let command: CommandDef;
    let result: MaybePromise<JsonOut | void>;
    try {
      command = this.lookup(request);
      const args = request.get('arguments');
      result = run(command, visitArgs(command.args ?? NO_ARGS, (args as QDict | undefined) ?? EMPTY));
    } catch (err) {
      return { reply: { error: errorBody(err) }, id };
    }
    if (!(result instanceof Promise)) return success(command, result, id);
    return result.then(
      (value) => success(command, value, id),
      (err: unknown) => ({ reply: { error: errorBody(err) }, id }),
    );
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

function success(command: CommandDef, result: JsonOut | void, id: QObject | undefined): Outcome {
  return command.successResponse === false ? null : { reply: { return: result ?? {} }, id };
}

function errorBody(err: unknown): JsonOut {
  if (err instanceof QgaError) return { class: err.errorClass, desc: err.message };
  // A bug in a command must still produce a reply, never take the agent down.
  const text = err instanceof Error ? err.message : String(err);
  return { class: 'GenericError', desc: text };
}
