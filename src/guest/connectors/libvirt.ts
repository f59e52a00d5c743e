import { isQDict, JsonStreamer, type Message } from 'quiesce-agent/protocol';
import type { LibvirtTarget } from '../../config/connector.js';
import { AgentError, QuiesceError } from '../../errors.js';
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
}

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
  private lease: LibvirtLease | undefined;
  private virsh: VirshAgent | undefined;
  private closed = false;
  private readonly maxReplyBytes: number;

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
    if (this.virsh) return this.virsh.execute(command, args, opts);
    try {
      this.lease ??= (this.opts.pool ?? libvirtPool).lease(this.target.uri, this.address);
      await this.lease.connection();
    } catch (err) {
      if (!(err instanceof NativeUnavailable)) throw agentFailure(err, command, this.address);
      await this.fallBack(err);
      return this.virsh!.execute(command, args, opts);
    }
    return this.viaRpc(this.lease, command, args, opts);
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

  private async viaRpc(
    lease: LibvirtLease,
    command: string,
    args: Record<string, unknown> | undefined,
    opts: ExecOptions,
  ): Promise<unknown> {
    const request = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
    const timeoutMs = opts.timeoutMs ?? defaultTimeout(command);
    const noReply = NO_REPLY_COMMANDS.has(command);
    let text: string | undefined;
    try {
      text = await lease.withDomain(
        this.target.domain,
        (conn, dom) =>
          conn.agentCommand(dom, request, {
            agentTimeoutSec: Math.max(1, Math.ceil(timeoutMs / 1000)),
            timeoutMs: timeoutMs + CALL_MARGIN_MS,
            ...(opts.signal ? { signal: opts.signal } : {}),
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
