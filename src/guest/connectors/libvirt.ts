import { randomInt } from 'node:crypto';
import { isQDict, JsonStreamer, type Message } from 'quiesce-agent/protocol';
import type { LibvirtTarget } from '../../config/connector.js';
import { AgentError, QuiesceError } from '../../errors.js';
import { LibvirtError } from '../../libvirt/error.js';
import { libvirtPool, NativeUnavailable, type LibvirtLease, type LibvirtPool } from '../../libvirt/pool.js';
import { DEFAULT_MAX_REPLY_BYTES } from '../stream-client.js';
import { defaultTimeout, NO_REPLY_COMMANDS, SAFE_TO_RETRY, type ExecOptions, type GuestAgent } from '../types.js';
import { toPlain } from '../values.js';
import { agentFailure, isSilence } from './libvirt-errors.js';
import type { VirshAgent } from './libvirt-virsh.js';

export interface LibvirtAgentOptions {
  /** Largest reply accepted, in bytes. */
  readonly maxReplyBytes?: number;
  /** Told once per URI and process when the URI is reached through virsh instead (why, and that it is slower). */
  readonly onWarning?: (message: string) => void;
  /** The connection pool (tests pass their own; default: the process's, shared by a run's guests). */
  readonly pool?: LibvirtPool;
  /** Largest command accepted (JSON text, bytes; default MAX_LIBVIRT_COMMAND_BYTES). Tests raise it to corrupt a channel. */
  readonly maxCommandBytes?: number;
}

/**
 * The largest agent command (its JSON text, in bytes) sent through libvirt. libvirt (9.0) writes a
 * command to the agent's socket without blocking, and when a write is cut short it counts none of it
 * and sends the command again from its start: a command bigger than the socket's send buffer
 * (net.core.wmem_default, 208 KiB by default; 200 KiB went through and 256 KiB did not) reaches the
 * agent garbled, gets no reply, and leaves the agent's later replies one command off. Well below that.
 */
export const MAX_LIBVIRT_COMMAND_BYTES = 128 * 1024;

/** guest-sync round trips a resync tries before giving up: each consumes at most one stale reply. */
const RESYNC_ATTEMPTS = 8;

/** An agent error that says the agent read something other than what was sent (both agents word it so). */
const GARBLED = /JSON parse error/i;

/** Extra time our own call waits beyond libvirt's agent timeout, so libvirt's answer (its timeout error too) comes first. */
const CALL_MARGIN_MS = 1500;

/** URIs whose fallback to virsh was already announced in this process. */
const warned = new Set<string>();

/**
 * Reaches a guest's agent through libvirt, which owns the agent channel of its
 * domains and does its own guest-sync: `qemu-agent-command` over libvirt's
 * RPC protocol on one connection per URI (src/libvirt/pool.ts), shared with
 * the run's other guests and the libvirt snapshot provider. Where the URI
 * cannot be reached natively (no libvirtd socket here, TLS or TCP transports)
 * it falls back to one virsh process per command, and says so once.
 */
export class LibvirtAgent implements GuestAgent {
  readonly address: string;
  /** Each command is its own RPC call, matched by serial: callers may send several at once. */
  readonly concurrent = true;
  private lease: LibvirtLease | undefined;
  private virsh: VirshAgent | undefined;
  private closed = false;
  private readonly maxReplyBytes: number;
  /**
   * Set when a command's reply may still be on its way (a timeout) or the channel was garbled: the
   * next command first resyncs (guest-sync with a fresh id until that id comes back), so that no late
   * reply is taken for a later command's.
   */
  private unsure = false;
  private resyncing: Promise<void> | undefined;

  constructor(
    private readonly target: LibvirtTarget,
    private readonly opts: LibvirtAgentOptions = {},
  ) {
    this.address = `libvirt:${target.uri ?? 'default'}/${target.domain}`;
    this.maxReplyBytes = opts.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES;
  }

  /** 'rpc' or 'virsh' once the first command chose (undefined before). */
  get via(): 'rpc' | 'virsh' | undefined {
    return this.virsh ? 'virsh' : this.lease ? 'rpc' : undefined;
  }

  async execute(command: string, args?: Record<string, unknown>, opts: ExecOptions = {}): Promise<unknown> {
    if (this.closed) throw new QuiesceError('CHANNEL_GONE', `${this.address}: client closed`, { guest: this.address });
    const request = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
    this.checkSize(command, request);
    if (this.virsh) return this.virsh.execute(command, args, opts);
    try {
      this.lease ??= (this.opts.pool ?? libvirtPool).lease(this.target.uri, this.address);
      await this.lease.connection();
    } catch (err) {
      if (!(err instanceof NativeUnavailable)) throw agentFailure(err, command, this.address);
      await this.fallBack(err);
      return this.virsh!.execute(command, args, opts);
    }
    return this.viaRpc(this.lease, command, request, opts);
  }

  /** Refuses, before anything is sent, a command libvirt would garble (virsh goes through libvirtd too). */
  private checkSize(command: string, request: string): void {
    const max = this.opts.maxCommandBytes ?? MAX_LIBVIRT_COMMAND_BYTES;
    const size = Buffer.byteLength(request);
    if (size > max)
      throw new QuiesceError(
        'COMMAND_TOO_LARGE',
        `${this.address}: ${command} is ${size} bytes of JSON, more than the ${max} libvirt passes to the agent intact (send less per command: smaller guest-file-write chunks)`,
        { guest: this.address },
      );
  }

  private async fallBack(why: NativeUnavailable): Promise<void> {
    this.lease?.release();
    this.lease = undefined;
    // Loaded only here: execa (behind virsh) costs a run's start-up hundreds of ms otherwise.
    const { VirshAgent } = await import('./libvirt-virsh.js');
    this.virsh ??= new VirshAgent(this.target);
    if (!warned.has(why.uri)) {
      warned.add(why.uri);
      this.opts.onWarning?.(
        `libvirt ${why.uri}: ${why.reason}; reaching the agent through virsh instead (a process per command, slower)`,
      );
    }
  }

  private async viaRpc(lease: LibvirtLease, command: string, request: string, opts: ExecOptions): Promise<unknown> {
    const timeoutMs = opts.timeoutMs ?? defaultTimeout(command);
    if (this.unsure) await this.resync(lease, timeoutMs, opts.signal);
    try {
      return await this.once(lease, command, request, timeoutMs, opts.signal);
    } catch (err) {
      if (suspect(err)) this.unsure = true;
      throw err;
    }
  }

  /** One command through libvirt, its reply parsed. */
  private async once(
    lease: LibvirtLease,
    command: string,
    request: string,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const noReply = NO_REPLY_COMMANDS.has(command);
    let text: string | undefined;
    try {
      text = await lease.withDomain(
        this.target.domain,
        (conn, dom) =>
          conn.agentCommand(dom, request, {
            agentTimeoutSec: Math.max(1, Math.ceil(timeoutMs / 1000)),
            timeoutMs: timeoutMs + CALL_MARGIN_MS,
            ...(signal ? { signal } : {}),
          }),
        { retryOnDrop: SAFE_TO_RETRY.has(command), lookup: { timeoutMs } },
      );
    } catch (err) {
      const e = agentFailure(err, command, this.address);
      // No reply is success for shutdown/suspend: the guest goes away or stays silent.
      if (noReply && isSilence(e)) return undefined;
      throw e;
    }
    if (noReply || text === undefined) return undefined;
    return this.parse(command, text);
  }

  /**
   * guest-sync with a fresh id until the agent echoes that id: every stale reply still queued in
   * libvirt's channel is consumed by one of these, never by a real command. A garbled channel can also
   * swallow a sync whole (the agent's parser still inside the garbage: libvirt then times out), so a
   * timeout is retried too. Bounded by RESYNC_ATTEMPTS and by `timeoutMs` in all; concurrent commands
   * share one resync. Fails with the last timeout, or OUT_OF_SYNC when the replies stayed someone else's.
   */
  private resync(lease: LibvirtLease, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    this.resyncing ??= (async () => {
      const deadline = performance.now() + timeoutMs;
      let last: QuiesceError | undefined;
      try {
        for (let i = 0; i < RESYNC_ATTEMPTS && performance.now() < deadline; i++) {
          const id = randomInt(1, 2 ** 31);
          const request = JSON.stringify({ execute: 'guest-sync', arguments: { id } });
          let got: unknown;
          try {
            got = await this.once(lease, 'guest-sync', request, Math.max(1000, deadline - performance.now()), signal);
          } catch (err) {
            // A stale error reply, a garbled one, or a sync the garbage swallowed: try again. Anything else stops.
            const again =
              err instanceof AgentError ||
              (err instanceof QuiesceError && (err.code === 'OUT_OF_SYNC' || err.code === 'TIMEOUT'));
            if (!again || signal?.aborted) throw err;
            last = err as QuiesceError;
            continue;
          }
          if (got === id || got === BigInt(id)) {
            this.unsure = false;
            return;
          }
        }
        if (last?.code === 'TIMEOUT') throw last;
        throw new QuiesceError(
          'OUT_OF_SYNC',
          `${this.address}: the agent's replies stayed out of step with its commands (guest-sync never echoed its id)`,
          { guest: this.address },
        );
      } finally {
        this.resyncing = undefined;
      }
    })();
    return this.resyncing;
  }

  /** The agent's reply as libvirt passed it on (JSON text), parsed as the stream client parses (exact integers). */
  private parse(command: string, text: string): unknown {
    if (Buffer.byteLength(text) > this.maxReplyBytes)
      throw new QuiesceError(
        'REPLY_TOO_LARGE',
        `${this.address}: the reply to ${command} exceeded ${this.maxReplyBytes} bytes`,
        {
          guest: this.address,
        },
      );
    let m: Message | undefined;
    try {
      const streamer = new JsonStreamer((x) => (m ??= x));
      streamer.feed(Buffer.from(text));
    } catch {
      m = undefined;
    }
    if (!m?.ok || !isQDict(m.value)) {
      this.unsure = true;
      throw new QuiesceError(
        'OUT_OF_SYNC',
        `${this.address}: libvirt passed on a reply to ${command} that is not a JSON object`,
        {
          guest: this.address,
        },
      );
    }
    if (m.value.has('return')) return toPlain(m.value.get('return')!);
    const e = m.value.get('error');
    if (isQDict(e ?? null)) {
      const d = e as Map<string, unknown>;
      const cls = typeof d.get('class') === 'string' ? (d.get('class') as string) : 'GenericError';
      const desc = typeof d.get('desc') === 'string' ? (d.get('desc') as string) : '(no description)';
      throw new AgentError(command, cls, desc, this.address);
    }
    this.unsure = true;
    throw new QuiesceError('OUT_OF_SYNC', `${this.address}: reply to ${command} is neither return nor error`, {
      guest: this.address,
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.lease?.release();
    this.lease = undefined;
    await this.virsh?.close();
  }
}

/**
 * A failure after which a reply may still come, or may already be one command off: a timeout, libvirt
 * saying the agent is out of sync, or the agent saying it could not parse what it read. (A reply that
 * does not parse is flagged where it is parsed; RPC framing errors close the connection, not the channel.)
 */
function suspect(err: unknown): boolean {
  if (err instanceof AgentError) return GARBLED.test(err.desc);
  if (!(err instanceof QuiesceError)) return false;
  return err.code === 'TIMEOUT' || (err.code === 'OUT_OF_SYNC' && err.cause instanceof LibvirtError);
}
