import { QuiesceError } from './errors.js';

/**
 * How a client's connection ended, told once to each listener (the QMP and
 * libvirt RPC clients): the first end() wins, a listener added afterwards is
 * called at once, and a listener removed before the end is never called.
 */
export class ConnectionEnd {
  private readonly listeners = new Set<(err: QuiesceError) => void>();
  private error: QuiesceError | undefined;

  /** The error the connection ended with; undefined while it is open. */
  get reason(): QuiesceError | undefined {
    return this.error;
  }

  /** Calls `listener` once when the connection ends (at once if it has); returns the unsubscribe function. */
  listen(listener: (err: QuiesceError) => void): () => void {
    if (this.error) {
      listener(this.error);
      return () => undefined;
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Removes a listener (a waiter done before the end). */
  unlisten(listener: (err: QuiesceError) => void): void {
    this.listeners.delete(listener);
  }

  /** Ends the connection with `err` and tells every listener, in the order they came; false if it had ended. */
  end(err: QuiesceError): boolean {
    if (this.error) return false;
    this.error = err;
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const l of listeners) l(err);
    return true;
  }
}

/** Where a call's reply path finds it: settles the call once, whichever way. */
export interface Settle<T> {
  resolve(value: T): void;
  reject(err: Error): void;
}

/**
 * One call of a client awaiting its reply (the QMP and libvirt RPC clients):
 * it settles once, with the reply, or with TIMEOUT after `timeoutMs`, or with
 * TIMEOUT when `signal` aborts. `send` registers the settle functions where
 * the reply path finds them and writes the request (not at all when `signal`
 * has aborted already); `forget` unregisters them once the call settled. A
 * reply after the timeout finds nothing and is dropped.
 */
export function awaitReply<T>(o: {
  readonly address: string;
  /** The call's name in messages (the command, the procedure). */
  readonly name: string;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  readonly guest?: string | undefined;
  readonly send: (settle: Settle<T>) => void;
  readonly forget: () => void;
}): Promise<T> {
  const guest = o.guest !== undefined ? { guest: o.guest } : {};
  return new Promise<T>((resolve, reject) => {
    const { signal } = o;
    const finish = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      o.forget();
    };
    const timer = setTimeout(() => {
      finish();
      reject(new QuiesceError('TIMEOUT', `${o.address}: no reply to ${o.name} within ${o.timeoutMs} ms`, guest));
    }, o.timeoutMs);
    const onAbort = (): void => {
      finish();
      reject(new QuiesceError('TIMEOUT', `${o.address}: ${o.name} aborted`, { cause: signal?.reason, ...guest }));
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    o.send({
      resolve: (v) => {
        finish();
        resolve(v);
      },
      reject: (e) => {
        finish();
        reject(e);
      },
    });
  });
}
