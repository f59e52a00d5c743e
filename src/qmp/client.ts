import { connect, type Socket } from 'node:net';
import { encode, type JsonOut } from 'quiesce-agent/protocol';
import { awaitReply, ConnectionEnd } from '../connection.js';
import { QuiesceError } from '../errors.js';

/** The largest single QMP message accepted (a query-named-block-nodes of a big VM is well under this). */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Events kept for waitForEvent() callers that start waiting after the event arrived. */
const DEFAULT_EVENT_BACKLOG = 1000;

/** An asynchronous QMP event (BLOCK_JOB_COMPLETED, JOB_STATUS_CHANGE, SHUTDOWN, …). */
export interface QmpEvent {
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  readonly timestamp?: { readonly seconds: number; readonly microseconds: number };
  /** Order of arrival on this connection, from 1. */
  readonly seq: number;
}

/** QEMU answered a command with `{"error": {"class", "desc"}}`. */
export class QmpError extends QuiesceError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
    address: string,
    guest?: string,
  ) {
    super(
      'QMP_ERROR',
      `${address}: QMP ${command}: ${desc}${errorClass !== 'GenericError' ? ` (${errorClass})` : ''}`,
      {
        ...(guest !== undefined ? { guest } : {}),
      },
    );
    this.name = 'QmpError';
  }
}

export interface QmpClientOptions {
  /** Connect + greeting + qmp_capabilities (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** Default per-command timeout (default 10 s). */
  readonly commandTimeoutMs?: number;
  /** Largest message accepted; a bigger one closes the connection (QMP has no way to resync). */
  readonly maxMessageBytes?: number;
  /** Recent events kept for waitForEvent(…, { since }) (default 1000). */
  readonly eventBacklog?: number;
  /** Named in errors. */
  readonly guest?: string;
}

/** A command encoded ahead of time (see QmpClient.prepareCommand). */
export interface PreparedCommand {
  readonly command: string;
  readonly id: string;
  readonly bytes: Buffer;
}

export interface QmpCallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/**
 * A QMP client for QEMU's monitor socket: reads the greeting, negotiates
 * capabilities, runs commands with ids (several may be in flight; replies are
 * matched by id), routes events to listeners and a bounded backlog, and
 * bounds every message. QEMU writes each QMP message as one line of JSON, so
 * a line is parsed with JSON.parse: inside a frozen window the block job
 * events and the transaction's reply arrive here, and the native parser
 * costs ~0.7 ms less of the window than quiesce-agent/protocol's streaming
 * parser did in a TCG guest (bench/e2e-window.ts). A monitor set to
 * pretty=on (several lines per message) is refused with a clear error.
 * Requests are still encoded by quiesce-agent/protocol.
 */
export class QmpClient {
  readonly address: string;
  /** The greeting's `QMP` member: `version`, `capabilities`. */
  greeting: Readonly<Record<string, unknown>> = {};

  /** QEMU's version from the greeting ([major, minor]), or undefined if it gave none. */
  get qemuVersion(): readonly [number, number] | undefined {
    const v = (this.greeting['version'] as { qemu?: { major?: unknown; minor?: unknown } } | undefined)?.qemu;
    return typeof v?.major === 'number' && typeof v.minor === 'number' ? [v.major, v.minor] : undefined;
  }
  private readonly pending = new Map<string, Pending>();
  private readonly sent = new WeakSet<PreparedCommand>();
  private readonly listeners = new Set<(e: QmpEvent) => void>();
  private readonly backlog: QmpEvent[] = [];
  private readonly maxMessageBytes: number;
  private readonly backlogSize: number;
  private nextId = 1;
  private seq = 0;
  /** The part of a line received so far (chunks, and their total length). */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private readonly ended = new ConnectionEnd();
  private onGreeting: ((g: Record<string, unknown>) => void) | undefined;

  private constructor(
    private readonly socket: Socket,
    path: string,
    private readonly opts: QmpClientOptions,
  ) {
    this.address = `qmp:${path}`;
    this.maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.backlogSize = opts.eventBacklog ?? DEFAULT_EVENT_BACKLOG;
    // First to hear of the end: the calls in flight.
    this.ended.listen((err) => {
      for (const p of [...this.pending.values()]) p.reject(err);
      this.pending.clear();
    });
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err) => this.ended.end(this.gone(err.message)));
    socket.on('close', () => this.ended.end(this.gone('closed by QEMU')));
  }

  /**
   * Connects to a QMP unix socket, waits for the greeting and leaves
   * negotiation mode. QEMU serves one monitor client at a time: a second
   * client gets no greeting until the first leaves, hence the timeout.
   */
  static async connect(path: string, opts: QmpClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.connectTimeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    const guest = opts.guest !== undefined ? { guest: opts.guest } : {};
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QuiesceError('CONNECT_FAILED', `qmp:${path}: connect timed out after ${timeoutMs} ms`, guest));
      }, timeoutMs);
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(
          new QuiesceError('CONNECT_FAILED', `qmp:${path}: cannot connect: ${err.message}`, { cause: err, ...guest }),
        );
      });
      s.once('connect', () => {
        clearTimeout(timer);
        s.setNoDelay(true);
        resolve(s);
      });
    });
    const client = new QmpClient(socket, path, opts);
    try {
      client.greeting = await client.waitGreeting(Math.max(1, deadline - Date.now()));
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  private waitGreeting(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        done();
        reject(
          new QuiesceError(
            'CONNECT_FAILED',
            `${this.address}: no QMP greeting within ${timeoutMs} ms (QEMU serves one monitor client at a time: is another connected?)`,
            this.guestOpt(),
          ),
        );
      }, timeoutMs);
      const onClose = (err: QuiesceError): void => {
        done();
        reject(err);
      };
      const done = (): void => {
        clearTimeout(timer);
        this.onGreeting = undefined;
        this.ended.unlisten(onClose);
      };
      this.ended.listen(onClose);
      this.onGreeting = (g) => {
        done();
        resolve(g);
      };
    });
  }

  /** True once the connection is gone (closed by either side or failed). */
  get closed(): boolean {
    return this.ended.reason !== undefined;
  }

  /** Runs one command and returns its `return` member as plain values; an error reply throws QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: QmpCallOptions = {}): Promise<T> {
    return this.send<T>(this.prepareCommand(command, args), opts);
  }

  /**
   * Encodes a command now, with its id reserved, to be sent later by send():
   * a command meant for a frozen window is encoded before the window opens.
   */
  prepareCommand(command: string, args?: Record<string, unknown>): PreparedCommand {
    const id = `q${this.nextId++}`;
    const request: Record<string, JsonOut> = { execute: command };
    if (args !== undefined) request['arguments'] = args as JsonOut;
    request['id'] = id;
    return { command, id, bytes: Buffer.from(`${encode(request)}\n`) };
  }

  /** Sends a prepared command (once) and resolves with its `return` member, like execute(). */
  send<T = unknown>(prepared: PreparedCommand, opts: QmpCallOptions = {}): Promise<T> {
    if (this.ended.reason) return Promise.reject(this.ended.reason);
    const { command, id } = prepared;
    if (this.sent.has(prepared)) return Promise.reject(new Error(`QMP command ${id} (${command}) was sent already`));
    this.sent.add(prepared);
    const timeoutMs = opts.timeoutMs ?? this.opts.commandTimeoutMs ?? 10_000;
    // After a timeout or abort a late reply is dropped: its id is no longer pending.
    return awaitReply<T>({
      address: this.address,
      name: command,
      timeoutMs,
      signal: opts.signal,
      guest: this.opts.guest,
      send: (settle) => {
        this.pending.set(id, { command, resolve: (v) => settle.resolve(v as T), reject: settle.reject });
        this.socket.write(prepared.bytes);
      },
      forget: () => this.pending.delete(id),
    });
  }

  /** Calls `listener` with every event from now on; returns the unsubscribe function. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Calls `listener` once when the connection ends (at once if it has); returns the unsubscribe function. */
  onClose(listener: (err: QuiesceError) => void): () => void {
    return this.ended.listen(listener);
  }

  /** The sequence number of the last event received (0: none yet); pass it as `since` to miss nothing after now. */
  lastEventSeq(): number {
    return this.seq;
  }

  /**
   * Resolves with the first event matching `pred` that arrives after `since`
   * (default: now); events still in the backlog count, so a caller that marks
   * `since` before acting cannot miss a fast event.
   */
  waitForEvent(
    pred: (e: QmpEvent) => boolean,
    opts: QmpCallOptions & { readonly since?: number; readonly what?: string } = {},
  ): Promise<QmpEvent> {
    const since = opts.since ?? this.seq;
    const what = opts.what ?? 'a QMP event';
    const hit = this.backlog.find((e) => e.seq > since && pred(e));
    if (hit) return Promise.resolve(hit);
    if (this.ended.reason) return Promise.reject(this.ended.reason);
    const timeoutMs = opts.timeoutMs ?? this.opts.commandTimeoutMs ?? 10_000;
    return new Promise<QmpEvent>((resolve, reject) => {
      const signal = opts.signal;
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.listeners.delete(listener);
        this.ended.unlisten(onClose);
      };
      const listener = (e: QmpEvent): void => {
        if (e.seq <= since || !pred(e)) return;
        done();
        resolve(e);
      };
      const onClose = (err: QuiesceError): void => {
        done();
        reject(err);
      };
      const timer = setTimeout(() => {
        done();
        reject(new QuiesceError('TIMEOUT', `${this.address}: no ${what} within ${timeoutMs} ms`, this.guestOpt()));
      }, timeoutMs);
      const onAbort = (): void => {
        done();
        reject(
          new QuiesceError('TIMEOUT', `${this.address}: waiting for ${what} aborted`, {
            cause: signal?.reason,
            ...this.guestOpt(),
          }),
        );
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.listeners.add(listener);
      this.ended.listen(onClose);
    });
  }

  /** Closes the connection; pending commands and waiters fail with CHANNEL_GONE. */
  close(): void {
    this.ended.end(new QuiesceError('CHANNEL_GONE', `${this.address}: client closed`, this.guestOpt()));
    this.socket.destroy();
  }

  private guestOpt(): { guest?: string } {
    return this.opts.guest !== undefined ? { guest: this.opts.guest } : {};
  }

  private gone(reason: string): QuiesceError {
    return new QuiesceError('CHANNEL_GONE', `${this.address}: connection ${reason}`, this.guestOpt());
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0 && !this.ended.reason; nl = chunk.indexOf(0x0a, start)) {
      const tail = chunk.subarray(start, nl);
      const line = this.partialBytes > 0 ? Buffer.concat([...this.partial, tail]) : tail;
      this.partial = [];
      this.partialBytes = 0;
      start = nl + 1;
      this.onLine(line);
    }
    if (this.ended.reason || start >= chunk.length) return;
    this.partial.push(chunk.subarray(start));
    this.partialBytes += chunk.length - start;
    if (this.partialBytes > this.maxMessageBytes) {
      this.tooLarge();
    }
  }

  private tooLarge(): void {
    this.fail('REPLY_TOO_LARGE', `a QMP message exceeded ${this.maxMessageBytes} bytes; connection closed`);
  }

  /** Ends the connection: QMP has no way to resynchronise. */
  private fail(code: 'REPLY_TOO_LARGE' | 'OUT_OF_SYNC', text: string): void {
    this.partial = [];
    this.partialBytes = 0;
    this.ended.end(new QuiesceError(code, `${this.address}: ${text}`, this.guestOpt()));
    this.socket.destroy();
  }

  private onLine(line: Buffer): void {
    if (this.ended.reason) return;
    if (line.length > this.maxMessageBytes) {
      this.tooLarge();
      return;
    }
    const text = line.toString('utf8').trim();
    if (text === '') return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      this.fail(
        'OUT_OF_SYNC',
        `unparsable QMP message (${(err as Error).message}): ${JSON.stringify(text.slice(0, 80))}; ` +
          'QMP messages are read one per line (is the monitor set to pretty=on?)',
      );
      return;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.fail('OUT_OF_SYNC', `unparsable QMP message: not an object: ${JSON.stringify(text.slice(0, 80))}`);
      return;
    }
    this.onMessage(value as Record<string, unknown>);
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.onGreeting?.((msg['QMP'] ?? {}) as Record<string, unknown>);
      return;
    }
    if (typeof msg['event'] === 'string') {
      const e: QmpEvent = {
        event: msg['event'],
        data: (msg['data'] ?? {}) as Record<string, unknown>,
        ...(msg['timestamp'] ? { timestamp: msg['timestamp'] as { seconds: number; microseconds: number } } : {}),
        seq: ++this.seq,
      };
      this.backlog.push(e);
      if (this.backlog.length > this.backlogSize) this.backlog.shift();
      for (const l of [...this.listeners]) l(e);
      return;
    }
    const id = msg['id'];
    const p = typeof id === 'string' ? this.pending.get(id) : undefined;
    const error = msg['error'] as { class?: unknown; desc?: unknown } | undefined;
    if (!p) {
      // An error without an id: QEMU could not read a request of ours, and cannot say which.
      if (error && id === undefined) {
        const desc = typeof error.desc === 'string' ? error.desc : '(no description)';
        for (const q of [...this.pending.values()])
          q.reject(new QmpError(q.command, String(error.class ?? 'GenericError'), desc, this.address, this.opts.guest));
      }
      return; // a late reply to a command that timed out
    }
    if (error && typeof error === 'object') {
      p.reject(
        new QmpError(
          p.command,
          typeof error.class === 'string' ? error.class : 'GenericError',
          typeof error.desc === 'string' ? error.desc : '(no description)',
          this.address,
          this.opts.guest,
        ),
      );
    } else if ('return' in msg) {
      p.resolve(msg['return']);
    } else {
      p.reject(
        new QuiesceError('OUT_OF_SYNC', `${this.address}: reply to ${p.command} is neither return nor error`, {
          ...this.guestOpt(),
        }),
      );
    }
  }
}
