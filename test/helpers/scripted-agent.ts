import { AgentError, QuiesceError } from '../../src/errors.js';
import type { ExecOptions, GuestAgent } from '../../src/guest/types.js';

/** What the scripted agent does with one request: a value, an agent error, a lost reply, or a hang. */
export type Step =
  { readonly reply: unknown } | { readonly error: string } | { readonly lost: true } | { readonly hang: true };

/**
 * An in-memory GuestAgent for unit tests of the workflow (no socket, no
 * root): each command answers from its queue of scripted steps, the last one
 * repeating. Records every call.
 */
export class ScriptedAgent implements GuestAgent {
  readonly address = 'scripted';
  readonly calls: string[] = [];
  closed = false;

  constructor(private readonly script: Record<string, Step[]>) {}

  async execute(command: string, _args?: Record<string, unknown>, opts: ExecOptions = {}): Promise<unknown> {
    this.calls.push(command);
    const queue = this.script[command];
    if (!queue?.length) throw new AgentError(command, 'CommandNotFound', `The command ${command} has not been found`);
    const step = queue.length > 1 ? queue.shift()! : queue[0]!;
    if ('reply' in step) return step.reply;
    if ('error' in step) throw new AgentError(command, 'GenericError', step.error);
    if ('lost' in step) throw new QuiesceError('CHANNEL_GONE', `${command}: the connection closed before the reply`);
    return new Promise((_, reject) =>
      setTimeout(
        () => reject(new QuiesceError('TIMEOUT', `${command}: no reply within ${opts.timeoutMs} ms`)),
        opts.timeoutMs ?? 10_000,
      ),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
