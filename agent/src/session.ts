import { encodeResponse, JsonStreamer, SENTINEL, type Message } from './protocol/index.js';
import type { Agent, Executed } from './agent.js';

/** One peer's byte stream: bytes in, replies out, in order. */
export interface Peer {
  /**
   * Nothing when written at once (or the peer is gone); otherwise a promise
   * that resolves once written. Never throws or rejects.
   */
  write(data: Buffer): void | Promise<void>;
  pause(): void;
  resume(): void;
}

/** Requests parsed but not yet answered before we stop reading from the peer. */
const MAX_PENDING = 256;

/**
 * Parses one peer's stream and answers each message in order. Commands of all
 * sessions run one at a time through the agent, as in the reference. A request
 * whose command and write complete synchronously is answered within feed().
 */
export class Session {
  private readonly streamer: JsonStreamer;
  private readonly pending: Message[] = [];
  private draining = false;
  private paused = false;
  private closed = false;

  constructor(
    private readonly agent: Agent,
    private readonly peer: Peer,
  ) {
    this.streamer = new JsonStreamer((m) => this.pending.push(m));
  }

  feed(bytes: Uint8Array): void {
    this.streamer.feed(bytes);
    if (this.pending.length > MAX_PENDING && !this.paused) {
      this.paused = true;
      this.peer.pause();
    }
    if (!this.draining) this.drain();
  }

  /** The peer is gone: stop answering it (a command already running still completes). */
  close(): void {
    this.closed = true;
    this.pending.length = 0;
  }

  /** Resolves when every parsed message has been answered. */
  async idle(): Promise<void> {
    while (this.draining) await new Promise((r) => setImmediate(r));
  }

  /** Answers the pending messages in order; goes on asynchronously from the first answer that is not immediate. */
  private drain(): void {
    this.draining = true;
    let waiting = false;
    try {
      for (let m = this.pending.shift(); m && !this.closed; m = this.pending.shift()) {
        if (this.paused && this.pending.length < MAX_PENDING / 2) {
          this.paused = false;
          this.peer.resume();
        }
        const answered = this.answer(m);
        if (answered) {
          waiting = true;
          void answered.then(
            () => this.drain(),
            (err: unknown) => {
              this.draining = false;
              throw err;
            },
          );
          return;
        }
      }
    } finally {
      if (!waiting) this.draining = false;
    }
  }

  private answer(m: Message): void | Promise<void> {
    if (!m.ok) {
      this.agent.log({ kind: 'parse-error', desc: m.error });
      return this.peer.write(
        Buffer.from(encodeResponse({ error: { class: 'GenericError', desc: m.error } }, undefined)),
      );
    }
    const executed = this.agent.execute(m.value);
    return executed instanceof Promise ? executed.then((e) => this.reply(e)) : this.reply(executed);
  }

  private reply({ outcome, delimited }: Executed): void | Promise<void> {
    if (!outcome || this.closed) return;
    const line = Buffer.from(encodeResponse(outcome.reply, outcome.id), 'latin1');
    return this.peer.write(delimited ? Buffer.concat([Buffer.of(SENTINEL), line]) : line);
  }
}
