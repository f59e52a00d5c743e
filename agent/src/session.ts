import { encodeResponse, JsonStreamer, SENTINEL, type Message } from './protocol/index.js';
import type { Agent } from './agent.js';

/** One peer's byte stream: bytes in, replies out, in order. */
export interface Peer {
  /** Resolves once written, or at once if the peer is gone; never rejects. */
  write(data: Buffer): Promise<void>;
  pause(): void;
  resume(): void;
}

/** Requests parsed but not yet answered before we stop reading from the peer. */
const MAX_PENDING = 256;

/**
 * Parses one peer's stream and answers each message in order. Commands of all
 * sessions run one at a time through the agent, as in the reference.
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
    if (!this.draining) void this.drain();
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

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      for (let m = this.pending.shift(); m && !this.closed; m = this.pending.shift()) {
        if (this.paused && this.pending.length < MAX_PENDING / 2) {
          this.paused = false;
          this.peer.resume();
        }
        await this.answer(m);
      }
    } finally {
      this.draining = false;
    }
  }

  private async answer(m: Message): Promise<void> {
    if (!m.ok) {
      this.agent.log({ kind: 'parse-error', desc: m.error });
      await this.peer.write(
        Buffer.from(encodeResponse({ error: { class: 'GenericError', desc: m.error } }, undefined)),
      );
      return;
    }
    const { outcome, delimited } = await this.agent.execute(m.value);
    if (!outcome || this.closed) return;
    const line = Buffer.from(encodeResponse(outcome.reply, outcome.id), 'latin1');
    await this.peer.write(delimited ? Buffer.concat([Buffer.of(SENTINEL), line]) : line);
  }
}
