import type { MaybePromise } from './maybe-promise.js';

/**
 * Runs tasks one at a time, in the order they were queued. A task with
 * nothing ahead of it runs at once, in the caller's turn, and a synchronous
 * task's result (or throw) comes back synchronously (see MaybePromise). A
 * task's failure does not stop the ones behind it.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  /** Tasks queued or running. */
  private pending = 0;

  run<T>(task: () => Promise<T>): Promise<T>;
  run<T>(task: () => MaybePromise<T>): MaybePromise<T>;
  run<T>(task: () => MaybePromise<T>): MaybePromise<T> {
    if (this.pending++ === 0) {
      let result: MaybePromise<T>;
      try {
        result = task();
      } catch (err) {
        this.pending--;
        throw err;
      }
      if (!(result instanceof Promise)) {
        this.pending--;
        return result;
      }
      return this.track(result);
    }
    return this.track(this.tail.then(task));
  }

  /** Resolves once every task queued so far has settled. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }

  private track<T>(running: Promise<T>): Promise<T> {
    // Counted down before the caller's own continuation runs, so a task it starts from there finds the queue empty.
    const settled = running.finally(() => {
      this.pending--;
    });
    this.tail = settled.catch(() => undefined);
    return settled;
  }
}
