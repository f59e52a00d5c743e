/**
 * Runs async tasks one at a time, in the order they were queued. A task with
 * nothing ahead of it starts at once, in the caller's turn: a turn through a
 * promise chain costs a microtask, which under emulation is measurable inside
 * the frozen window. A task's failure does not stop the ones behind it.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  /** Tasks queued or running. */
  private pending = 0;

  run<T>(task: () => T | Promise<T>): Promise<T> {
    const body = async (): Promise<T> => {
      try {
        return await task();
      } finally {
        this.pending--;
      }
    };
    const run = this.pending++ === 0 ? body() : this.tail.then(body);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every task queued so far has settled. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}
