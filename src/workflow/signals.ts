import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';

const HANDLED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
export type HandledSignal = (typeof HANDLED)[number];
const NUMBERS: Record<HandledSignal, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/**
 * SIGINT/SIGTERM/SIGHUP never kill a run while a guest is frozen: they abort
 * what is running (the snapshot inside a window, a copy wait, a backup or
 * verify process group after it), the freeze guards thaw, and the run starts
 * no new step. The CLI exits with 128+signal afterwards.
 */
export class SignalGuard {
  private readonly controllers = new Set<AbortController>();
  private readonly handlers = new Map<HandledSignal, () => void>();
  received: HandledSignal | undefined;

  /** `action`: what the log says happens now (a run stops its steps and thaws; a restore removes what it wrote). */
  constructor(
    private readonly log: Log,
    private readonly action = 'stopping the running steps, thawing what is frozen, then exiting',
  ) {}

  install(): this {
    for (const sig of HANDLED) {
      const h = (): void => this.trigger(sig);
      this.handlers.set(sig, h);
      process.on(sig, h);
    }
    return this;
  }

  uninstall(): void {
    for (const [sig, h] of this.handlers) process.off(sig, h);
    this.handlers.clear();
  }

  /** Also used by tests to simulate a signal. */
  trigger(sig: HandledSignal): void {
    this.received ??= sig;
    this.log({ kind: 'signal', signal: sig, action: this.action });
    for (const c of this.controllers) c.abort(new QuiesceError('INTERRUPTED', `received ${sig}`));
  }

  register(c: AbortController): void {
    if (this.received) c.abort(new QuiesceError('INTERRUPTED', `received ${this.received}`));
    this.controllers.add(c);
  }

  unregister(c: AbortController): void {
    this.controllers.delete(c);
  }

  exitCode(): number | undefined {
    return this.received ? 128 + NUMBERS[this.received] : undefined;
  }
}
