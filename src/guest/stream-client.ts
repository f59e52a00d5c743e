import { randomInt } from 'node:crypto';
import pRetry, { AbortError } from 'p-retry';
import { encode, isQDict, JsonStreamer, QNum, SENTINEL, type JsonOut, type Message } from 'quiesce-agent/protocol';
import { AgentError, QuiesceError } from '../errors.js';
import type { ByteChannel, ChannelOpener } from './channel.js';
import { defaultTimeout, NO_REPLY_COMMANDS, SAFE_TO_RETRY, type ExecOptions, type GuestAgent } from './types.js';
import { toPlain } from './values.js';
import type { ClientEvent } from '../log/events.js';

/** Things the client notices about a guest's channel, for the log. */
export interface StreamClientOptions {
  readonly address: string;
  readonly open: ChannelOpener;
  /** Largest reply accepted, in bytes (libvirt caps at 10 MiB too). */
  readonly maxReplyBytes?: number;
  readonly syncTimeoutMs?: number;
  /** Retries for connecting/syncing and for commands that are safe to repeat. */
  readonly retries?: number;
  readonly onEvent?: (event: ClientEvent) => void;
}

export const DEFAULT_MAX_REPLY_BYTES = 10 * 1024 * 1024;

/** What incoming bytes are for right now. */
type Mode =
  /** Nothing expected: drop everything (replies that arrive after a timeout). */
  | { kind: 'discard' }
  /** Waiting for the reply to guest-sync-delimited `id`. `early` gets replies that come before its 0xFF. */
  | { kind: 'sync'; id: number; sawSentinel: boolean; staleReplies: number; early?: (m: Message) => void }
  /** In sync: the next message is the reply to the command in flight. */
  | { kind: 'reply' };

/**
 * The guest-agent client over a byte stream: 0xFF + guest-sync-delimited with
 * a random id to get in sync (everything before the matching 0xFF-prefixed
 * reply is discarded), then one command at a time with a timeout. Any timeout,
 * oversized reply or lost channel puts it out of sync; the next command syncs
 * again (reconnecting if needed). Memory is bounded by maxReplyBytes.
 */
export class StreamAgentClient implements GuestAgent {
  readonly address: string;
  private channel: ByteChannel | undefined;
  private readonly streamer: JsonStreamer;
  private mode: Mode = { kind: 'discard' };
  private synced = false;
  private buffered = 0;
  private deliver: ((m: Message) => void) | undefined;
  private fail: ((err: Error) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly maxReplyBytes: number;

  constructor(private readonly opts: StreamClientOptions) {
    this.address = opts.address;
    this.maxReplyBytes = opts.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES;
    this.streamer = new JsonStreamer((m) => this.onMessage(m));
  }

  /** Runs one command; commands queue behind each other. */
  execute(command: string, args?: Record<string, unknown>, opts: ExecOptions = {}): Promise<unknown> {
    // Syncing before a command never waits longer than the command itself may.
    const syncMs = Math.min(
      this.opts.syncTimeoutMs ?? defaultTimeout('guest-sync-delimited'),
      opts.timeoutMs ?? defaultTimeout(command),
    );
    return this.serial(() =>
      this.withRetry(async () => this.run(command, args, opts), SAFE_TO_RETRY.has(command), opts.signal, syncMs),
    );
  }

  /** Connects (if needed) and proves the channel is in sync. */
  connect(): Promise<void> {
    return this.serial(() =>
      this.withRetry(
        async () => undefined,
        true,
        undefined,
        this.opts.syncTimeoutMs ?? defaultTimeout('guest-sync-delimited'),
      ),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    const ch = this.channel;
    this.channel = undefined;
    await ch?.close();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Connecting and syncing change nothing in the guest, so they are retried;
   * the command itself only when `repeatable` (never a freeze).
   */
  private async withRetry<T>(
    command: () => Promise<T>,
    repeatable: boolean,
    signal: AbortSignal | undefined,
    syncMs: number,
  ): Promise<T> {
    const attempt = async (): Promise<T> => {
      await this.ensureSynced(syncMs);
      try {
        return await command();
      } catch (err) {
        if (err instanceof QuiesceError && err.code !== 'AGENT_ERROR') {
          this.synced = false;
          this.mode = { kind: 'discard' };
        }
        if (repeatable) throw err;
        throw new AbortError(err as Error);
      }
    };
    // The common case — connected, in sync, answered — takes no detour through the retry machinery.
    if (this.channel && this.synced && !signal?.aborted) {
      try {
        return await attempt();
      } catch (err) {
        if (err instanceof AbortError) throw err.originalError;
        if (!isTransient(err) || this.closed) throw err;
        this.opts.onEvent?.({
          kind: 'guest-reconnect',
          address: this.address,
          attempt: 1,
          reason: (err as Error).message,
        });
      }
    }
    return pRetry(attempt, {
      retries: this.opts.retries ?? 2,
      minTimeout: 200,
      maxTimeout: 2000,
      ...(signal ? { signal } : {}),
      shouldRetry: ({ error }) => isTransient(error) && !this.closed,
      onFailedAttempt: ({ error, attemptNumber }) => {
        if (!isTransient(error)) return;
        this.opts.onEvent?.({
          kind: 'guest-reconnect',
          address: this.address,
          attempt: attemptNumber,
          reason: error.message,
        });
      },
    });
  }

  private async ensureSynced(syncMs: number): Promise<void> {
    if (this.closed) throw new QuiesceError('CHANNEL_GONE', `${this.address}: client closed`, { guest: this.address });
    if (!this.channel) await this.attach();
    if (!this.synced) await this.sync(undefined, syncMs);
  }

  private async attach(): Promise<void> {
    let ch: ByteChannel;
    try {
      ch = await this.opts.open();
    } catch (err) {
      throw new QuiesceError('CONNECT_FAILED', `${this.address}: cannot connect: ${(err as Error).message}`, {
        cause: err,
        guest: this.address,
      });
    }
    this.channel = ch;
    this.synced = false;
    this.streamer.reset();
    this.mode = { kind: 'discard' };
    ch.onData((d) => {
      if (this.channel === ch) this.onData(d);
    });
    ch.onClose((err) => {
      if (this.channel !== ch) return;
      this.channel = undefined;
      this.synced = false;
      const reason = err ? err.message : 'closed by the other side';
      this.fail?.(new QuiesceError('CHANNEL_GONE', `${this.address}: channel ${reason}`, { guest: this.address }));
    });
  }

  /**
   * 0xFF + guest-sync-delimited with a random id; discard everything until that
   * id's 0xFF-prefixed reply. With `early` (already in sync, checking for an
   * error reply to a no-reply command) the 0xFF is left out, so the only reply
   * before the sentinel can be that command's.
   */
  private async sync(early?: (m: Message) => void, timeoutMs?: number): Promise<void> {
    const id = randomInt(1, 2 ** 47);
    const mode: Mode = { kind: 'sync', id, sawSentinel: false, staleReplies: 0, ...(early ? { early } : {}) };
    this.mode = mode;
    this.buffered = 0;
    const request = Buffer.from(`{"execute": "guest-sync-delimited", "arguments": {"id": ${id}}}\n`);
    try {
      await this.await(
        early ? request : Buffer.concat([Buffer.of(SENTINEL), request]),
        timeoutMs ?? this.opts.syncTimeoutMs ?? defaultTimeout('guest-sync-delimited'),
        'guest-sync-delimited',
      );
    } catch (err) {
      if (err instanceof QuiesceError && err.code === 'TIMEOUT' && mode.staleReplies > 0) {
        throw new QuiesceError(
          'OUT_OF_SYNC',
          `${this.address}: replies arrive but none answers our guest-sync-delimited`,
          {
            cause: err,
            guest: this.address,
          },
        );
      }
      throw err;
    }
    this.synced = true;
    this.mode = { kind: 'reply' };
  }

  private async run(command: string, args: Record<string, unknown> | undefined, opts: ExecOptions): Promise<unknown> {
    const request: Record<string, JsonOut> = { execute: command };
    if (args !== undefined) request['arguments'] = args as JsonOut;
    const bytes = Buffer.from(`${encode(request)}\n`);
    const timeoutMs = opts.timeoutMs ?? defaultTimeout(command);
    if (NO_REPLY_COMMANDS.has(command)) return this.runNoReply(command, bytes, timeoutMs);
    this.buffered = 0;
    const m = await this.await(bytes, timeoutMs, command, opts.signal);
    return this.result(command, m);
  }

  /**
   * A command that sends no reply on success: send it, then sync. An error
   * reply comes before the sync's reply; no error means success, and so does
   * the guest going away (it is shutting down or suspending).
   */
  private async runNoReply(command: string, bytes: Buffer, timeoutMs: number): Promise<undefined> {
    let error: Message | undefined;
    await this.write(bytes);
    try {
      await this.sync((m) => (error ??= m), timeoutMs);
    } catch (err) {
      if (err instanceof QuiesceError && (err.code === 'TIMEOUT' || err.code === 'CHANNEL_GONE')) {
        this.synced = false;
        if (error) this.result(command, error);
        return undefined;
      }
      throw err;
    }
    if (error) this.result(command, error);
    return undefined;
  }

  private result(command: string, m: Message): unknown {
    if (!m.ok)
      throw new QuiesceError('OUT_OF_SYNC', `${this.address}: unparsable reply to ${command}: ${m.error}`, {
        guest: this.address,
      });
    const reply = m.value;
    if (isQDict(reply) && reply.has('return')) return toPlain(reply.get('return')!);
    if (isQDict(reply) && isQDict(reply.get('error') ?? null)) {
      const e = reply.get('error') as Map<string, unknown>;
      const cls = typeof e.get('class') === 'string' ? (e.get('class') as string) : 'GenericError';
      const desc = typeof e.get('desc') === 'string' ? (e.get('desc') as string) : '(no description)';
      throw new AgentError(command, cls, desc, this.address);
    }
    throw new QuiesceError('OUT_OF_SYNC', `${this.address}: reply to ${command} is neither return nor error`, {
      guest: this.address,
    });
  }

  /** Writes `bytes` and waits for the next message the current mode delivers. */
  private await(bytes: Buffer, timeoutMs: number, what: string, signal?: AbortSignal): Promise<Message> {
    return new Promise<Message>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.deliver = undefined;
        this.fail = undefined;
      };
      const outOfSync = (err: Error): void => {
        done();
        this.synced = false;
        this.mode = { kind: 'discard' };
        this.opts.onEvent?.({ kind: 'guest-resync', address: this.address, reason: err.message });
        reject(err);
      };
      const timer = setTimeout(
        () =>
          outOfSync(
            new QuiesceError('TIMEOUT', `${this.address}: no reply to ${what} within ${timeoutMs} ms`, {
              guest: this.address,
            }),
          ),
        timeoutMs,
      );
      const onAbort = (): void =>
        outOfSync(
          new QuiesceError('TIMEOUT', `${this.address}: ${what} aborted`, {
            guest: this.address,
            cause: signal?.reason,
          }),
        );
      signal?.addEventListener('abort', onAbort, { once: true });
      this.deliver = (m) => {
        done();
        resolve(m);
      };
      this.fail = outOfSync;
      this.write(bytes).catch(outOfSync);
    });
  }

  private async write(bytes: Buffer): Promise<void> {
    const ch = this.channel;
    if (!ch) throw new QuiesceError('CHANNEL_GONE', `${this.address}: channel closed`, { guest: this.address });
    await ch.write(bytes);
  }

  private onData(chunk: Buffer): void {
    // 0xFF never occurs inside an agent's JSON (it escapes everything non-ASCII): it only marks a sync reply.
    let start = 0;
    for (;;) {
      const ff = chunk.indexOf(SENTINEL, start);
      const end = ff < 0 ? chunk.length : ff;
      if (end > start) this.feed(chunk.subarray(start, end));
      if (ff < 0) return;
      start = ff + 1;
      if (this.mode.kind === 'sync') {
        this.mode.sawSentinel = true;
        this.streamer.reset();
        this.buffered = 0;
      }
    }
  }

  private feed(bytes: Buffer): void {
    const mode = this.mode;
    if (mode.kind === 'discard') return;
    if (mode.kind === 'sync' && !mode.sawSentinel && !mode.early) return;
    this.buffered += bytes.length;
    if (this.buffered > this.maxReplyBytes) {
      this.streamer.reset();
      this.buffered = 0;
      const err = new QuiesceError('REPLY_TOO_LARGE', `${this.address}: a reply exceeded ${this.maxReplyBytes} bytes`, {
        guest: this.address,
      });
      if (this.fail) this.fail(err);
      else this.mode = { kind: 'discard' };
      return;
    }
    this.streamer.feed(bytes);
  }

  private onMessage(m: Message): void {
    this.buffered = 0;
    const mode = this.mode;
    if (mode.kind === 'sync') {
      if (!mode.sawSentinel) {
        mode.early?.(m);
        return;
      }
      const ret = m.ok && isQDict(m.value) ? m.value.get('return') : undefined;
      if (ret instanceof QNum && ret.kind === 'int' && ret.value === BigInt(mode.id)) {
        this.deliver?.(m);
      } else {
        // A stale delimited reply (another client's, or an earlier sync's): look for the next 0xFF.
        mode.sawSentinel = false;
        mode.staleReplies++;
        this.report(m);
      }
      return;
    }
    if (mode.kind === 'reply' && this.deliver) {
      if (!m.ok) return this.report(m); // garbage between replies: skip it, keep waiting
      this.deliver(m);
      return;
    }
    this.report(m);
  }

  private report(m: Message): void {
    const text = m.ok ? encode(m.value).slice(0, 200) : m.error;
    this.opts.onEvent?.({ kind: 'guest-garbage', address: this.address, text });
  }
}

function isTransient(err: unknown): boolean {
  return (
    err instanceof QuiesceError &&
    ['TIMEOUT', 'CHANNEL_GONE', 'CONNECT_FAILED', 'OUT_OF_SYNC', 'REPLY_TOO_LARGE'].includes(err.code)
  );
}
