import { QuiesceError } from '../errors.js';
import { DEFAULT_SOCKET, RpcClient, type CallOptions, type RpcClientOptions, type RpcTransport } from './client.js';
import { LibvirtError } from './error.js';
import { decodeDomainEvent, type DomainEvent } from './events.js';
import {
  AgentTimeout,
  AuthType,
  DrvFeature,
  Limits,
  procedureName,
  QEMU_PROGRAM,
  QEMU_PROTOCOL_VERSION,
  QemuProc,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
} from './protocol.js';
import {
  paramsToRecord,
  readCheckpoint,
  readDomain,
  readOptString,
  readSnapshot,
  readString,
  readTypedParam,
  writeCheckpoint,
  writeDomain,
  writeOptString,
  writeSnapshot,
  writeString,
  type CheckpointRef,
  type DomainRef,
  type SnapshotRef,
  type TypedValue,
} from './types.js';
import { XdrReader, XdrWriter } from './xdr.js';

export interface LibvirtOpenOptions extends RpcClientOptions {
  /** libvirtd's socket (default /var/run/libvirt/libvirt-sock). */
  readonly socketPath?: string;
  /** Any other stream to libvirtd instead of its socket (ssh for qemu+ssh URIs: see transport.ts). */
  readonly transport?: () => Promise<RpcTransport>;
  /** The URI connect-open asks for (default qemu:///system). */
  readonly uri?: string;
  /** Open read-only (VIR_CONNECT_RO); the read-only socket accepts nothing else. */
  readonly readOnly?: boolean;
  /**
   * Ask for keepalive (default true): libvirtd then PINGs an idle connection
   * every few seconds and drops it when the PONGs stop, so a client whose
   * process hangs does not hold a connection forever. The client answers
   * PINGs whatever this says.
   */
  readonly keepalive?: boolean;
}

/** virDomainGetJobInfo's answer; byte counts and times fit a JS number (2^53). */
export interface JobInfo {
  /** A JobType value. */
  readonly type: number;
  readonly timeElapsedMs: number;
  readonly timeRemainingMs: number;
  readonly dataTotal: number;
  readonly dataProcessed: number;
  readonly dataRemaining: number;
  readonly memTotal: number;
  readonly memProcessed: number;
  readonly memRemaining: number;
  readonly fileTotal: number;
  readonly fileProcessed: number;
  readonly fileRemaining: number;
}

export interface JobStats {
  /** A JobType value. */
  readonly type: number;
  /** Fields as libvirt names them (`time_elapsed`, `disk_total`, `success`, …). */
  readonly stats: Readonly<Record<string, TypedValue>>;
}

export interface BlockJobInfo {
  readonly found: boolean;
  readonly type: number;
  readonly bandwidth: bigint;
  readonly cur: bigint;
  readonly end: bigint;
}

export interface AgentCommandOptions extends CallOptions {
  /**
   * Seconds libvirt waits for the agent, or AgentTimeout.BLOCK/DEFAULT/NOWAIT
   * (default 5). The call's own timeout defaults to this plus 5 s, so libvirt's
   * answer (its timeout error included) arrives before ours fires.
   */
  readonly agentTimeoutSec?: number;
  readonly flags?: number;
}

export interface EventWaitOptions extends CallOptions {
  /** Named in the timeout error (`no WHAT within N ms`; default `domain event`). */
  readonly what?: string;
  /**
   * Events after this sequence number count, those still in the backlog
   * included (default: lastEventSeq() now). Take it before the call that
   * causes the event: a fast job's event can arrive before that call's reply.
   */
  readonly since?: number;
}

/** Decoded events kept for waiters that start waiting after the event arrived. */
const EVENT_BACKLOG = 1000;

type Encode = ((w: XdrWriter) => void) | undefined;

/**
 * A connection to libvirtd over its RPC protocol with typed wrappers for the
 * procedures quiesce needs: lookups and XML, the guest agent, fsfreeze/thaw,
 * snapshots, backup jobs, checkpoints, block commit and domain events. One
 * connection serves any number of calls (and concurrent ones).
 */
export class LibvirtConnection {
  /** Events that arrived but could not be decoded (dropped). */
  undecodableEvents = 0;
  private readonly eventListeners = new Set<(e: DomainEvent) => void>();
  private readonly backlog: { seq: number; event: DomainEvent }[] = [];
  private seq = 0;

  private constructor(
    readonly rpc: RpcClient,
    readonly uri: string,
  ) {
    rpc.onMessage((m) => {
      let e: DomainEvent | undefined;
      try {
        e = decodeDomainEvent(m);
      } catch {
        this.undecodableEvents++;
        return;
      }
      if (e === undefined) return;
      this.backlog.push({ seq: ++this.seq, event: e });
      if (this.backlog.length > EVENT_BACKLOG) this.backlog.shift();
      for (const l of [...this.eventListeners]) {
        // One listener's bug must not keep the event from the others.
        try {
          l(e);
        } catch {
          /* ignored */
        }
      }
    });
  }

  /**
   * Connects and opens `uri`: auth-list (polkit is answered, SASL is not
   * spoken), the keepalive feature, connect-open. Any failure is
   * CONNECT_FAILED with libvirt's error as the cause.
   */
  static async open(opts: LibvirtOpenOptions = {}): Promise<LibvirtConnection> {
    const uri = opts.uri ?? 'qemu:///system';
    const rpc = opts.transport
      ? RpcClient.fromTransport(await opts.transport(), opts)
      : await RpcClient.connect(opts.socketPath ?? DEFAULT_SOCKET, opts);
    const conn = new LibvirtConnection(rpc, uri);
    try {
      const types = await conn.call(REMOTE_PROGRAM, RemoteProc.AUTH_LIST, undefined, (r) =>
        r.array((x) => x.int(), Limits.AUTH_TYPE_LIST),
      );
      if (types.length > 0 && !types.includes(AuthType.NONE)) {
        if (!types.includes(AuthType.POLKIT))
          throw new QuiesceError(
            'CONNECT_FAILED',
            `${rpc.address}: libvirtd asks for SASL authentication, which this client does not speak`,
          );
        const complete = await conn.call(REMOTE_PROGRAM, RemoteProc.AUTH_POLKIT, undefined, (r) => r.int());
        if (complete !== 1)
          throw new QuiesceError('CONNECT_FAILED', `${rpc.address}: polkit authentication incomplete`);
      }
      // The keepalive feature is asked before connect-open (as libvirt's client does) but needs no open
      // connection in libvirtd: both go at once, one round trip.
      const keepalive = (opts.keepalive ?? true) ? conn.supportsFeature(DrvFeature.PROGRAM_KEEPALIVE) : undefined;
      keepalive?.catch(() => undefined);
      await conn.call(REMOTE_PROGRAM, RemoteProc.CONNECT_OPEN, (w) => {
        writeOptString(w, uri);
        w.uint(opts.readOnly ? 1 : 0);
      });
      await keepalive;
      return conn;
    } catch (err) {
      rpc.close();
      if (err instanceof QuiesceError && err.code === 'CONNECT_FAILED') throw err;
      const why = err instanceof LibvirtError ? err.libvirtMessage : (err as Error).message;
      throw new QuiesceError('CONNECT_FAILED', `${rpc.address}: cannot open ${uri}: ${why}`, {
        cause: err,
        ...(opts.guest !== undefined ? { guest: opts.guest } : {}),
      });
    }
  }

  get closed(): boolean {
    return this.rpc.closed;
  }

  /** connect-close, then the socket; safe to call twice, never throws. */
  async close(opts: CallOptions = {}): Promise<void> {
    if (this.rpc.closed) return;
    try {
      await this.call(REMOTE_PROGRAM, RemoteProc.CONNECT_CLOSE, undefined, undefined, { timeoutMs: 5000, ...opts });
    } catch {
      // The socket goes anyway; libvirtd cleans up a connection that vanished.
    } finally {
      this.rpc.close();
    }
  }

  /** Sends a keepalive PING; resolves with the round trip in ms. */
  ping(opts: CallOptions = {}): Promise<number> {
    return this.rpc.ping(opts);
  }

  // ---- connection ----

  supportsFeature(feature: number, opts?: CallOptions): Promise<boolean> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.CONNECT_SUPPORTS_FEATURE,
      (w) => w.int(feature),
      (r) => r.int() !== 0,
      opts,
    );
  }

  /** The hypervisor driver's name (`QEMU`). */
  getType(opts?: CallOptions): Promise<string> {
    return this.call(REMOTE_PROGRAM, RemoteProc.CONNECT_GET_TYPE, undefined, readString, opts);
  }

  /** The hypervisor's version as major*1e6 + minor*1e3 + micro (QEMU 7.2.22 → 7002022). */
  async getVersion(opts?: CallOptions): Promise<number> {
    return Number(await this.call(REMOTE_PROGRAM, RemoteProc.CONNECT_GET_VERSION, undefined, (r) => r.uhyper(), opts));
  }

  /** libvirtd's own version, encoded like getVersion() (9.0.0 → 9000000). */
  async getLibVersion(opts?: CallOptions): Promise<number> {
    return Number(
      await this.call(REMOTE_PROGRAM, RemoteProc.CONNECT_GET_LIB_VERSION, undefined, (r) => r.uhyper(), opts),
    );
  }

  getHostname(opts?: CallOptions): Promise<string> {
    return this.call(REMOTE_PROGRAM, RemoteProc.CONNECT_GET_HOSTNAME, undefined, readString, opts);
  }

  // ---- domains ----

  /** A missing domain rejects with LibvirtError, virCode VirErr.NO_DOMAIN. */
  lookupDomain(name: string, opts?: CallOptions): Promise<DomainRef> {
    return this.call(REMOTE_PROGRAM, RemoteProc.DOMAIN_LOOKUP_BY_NAME, (w) => writeString(w, name), readDomain, opts);
  }

  /** The domain's XML (DomainXmlFlags), as `virsh dumpxml` prints it. */
  getXmlDesc(dom: DomainRef, flags = 0, opts?: CallOptions): Promise<string> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_GET_XML_DESC,
      withFlags(writeDomain, dom, flags),
      readString,
      opts,
    );
  }

  /** virDomainGetBlockInfo of a disk (its target name `vda` or its source path): sizes in bytes. */
  getBlockInfo(
    dom: DomainRef,
    disk: string,
    flags = 0,
    opts?: CallOptions,
  ): Promise<{ allocation: bigint; capacity: bigint; physical: bigint }> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_GET_BLOCK_INFO,
      (w) => {
        writeDomain(w, dom);
        writeString(w, disk);
        w.uint(flags);
      },
      (r) => ({ allocation: r.uhyper(), capacity: r.uhyper(), physical: r.uhyper() }),
      opts,
    );
  }

  /** DomainState and its reason. */
  getState(dom: DomainRef, opts?: CallOptions): Promise<{ state: number; reason: number }> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_GET_STATE,
      (w) => {
        writeDomain(w, dom);
        w.uint(0);
      },
      (r) => ({ state: r.int(), reason: r.int() }),
      opts,
    );
  }

  /** Defines a persistent domain (not started). */
  defineXml(xml: string, flags = 0, opts?: CallOptions): Promise<DomainRef> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_DEFINE_XML_FLAGS,
      withFlags(writeString, xml, flags),
      readDomain,
      opts,
    );
  }

  undefine(dom: DomainRef, flags = 0, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_UNDEFINE_FLAGS,
      withFlags(writeDomain, dom, flags),
      undefined,
      opts,
    );
  }

  /** Creates and starts a transient domain. */
  createXml(xml: string, flags = 0, opts?: CallOptions): Promise<DomainRef> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_CREATE_XML,
      withFlags(writeString, xml, flags),
      readDomain,
      opts,
    );
  }

  destroy(dom: DomainRef, opts?: CallOptions): Promise<void> {
    return this.call(REMOTE_PROGRAM, RemoteProc.DOMAIN_DESTROY, (w) => writeDomain(w, dom), undefined, opts);
  }

  // ---- guest agent ----

  /**
   * Sends one agent command (the JSON text of `{"execute": …}`) through
   * libvirt, which owns the agent channel and does its own guest-sync.
   * Resolves with the agent's reply as JSON text (undefined when libvirt
   * returns none, e.g. for guest-shutdown).
   */
  agentCommand(dom: DomainRef, command: string, opts: AgentCommandOptions = {}): Promise<string | undefined> {
    const agentTimeout = opts.agentTimeoutSec ?? 5;
    const timeoutMs =
      opts.timeoutMs ??
      (agentTimeout > 0 ? agentTimeout * 1000 + 5000 : agentTimeout === AgentTimeout.NOWAIT ? 5000 : undefined);
    return this.call(
      QEMU_PROGRAM,
      QemuProc.DOMAIN_AGENT_COMMAND,
      (w) => {
        writeDomain(w, dom);
        writeString(w, command);
        w.int(agentTimeout);
        w.uint(opts.flags ?? 0);
      },
      readOptString,
      { ...opts, ...(timeoutMs !== undefined ? { timeoutMs } : {}) },
    );
  }

  /**
   * Freezes the guest filesystems at `mountpoints` through the agent
   * (guest-fsfreeze-freeze-list); resolves with how many froze. An empty
   * list means every filesystem of the guest.
   */
  fsfreeze(dom: DomainRef, mountpoints: readonly string[], flags = 0, opts?: CallOptions): Promise<number> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_FSFREEZE,
      (w) => writeMountpoints(w, dom, mountpoints, flags),
      (r) => r.int(),
      opts,
    );
  }

  /** Thaws (libvirt 9 refuses a non-empty list: the agent thaws all that is frozen); resolves with how many thawed. */
  fsthaw(dom: DomainRef, mountpoints: readonly string[] = [], flags = 0, opts?: CallOptions): Promise<number> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_FSTHAW,
      (w) => writeMountpoints(w, dom, mountpoints, flags),
      (r) => r.int(),
      opts,
    );
  }

  // ---- snapshots ----

  snapshotCreateXml(dom: DomainRef, xml: string, flags = 0, opts?: CallOptions): Promise<SnapshotRef> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_SNAPSHOT_CREATE_XML,
      (w) => {
        writeDomain(w, dom);
        writeString(w, xml);
        w.uint(flags);
      },
      readSnapshot,
      opts,
    );
  }

  snapshotGetXmlDesc(snap: SnapshotRef, flags = 0, opts?: CallOptions): Promise<string> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_SNAPSHOT_GET_XML_DESC,
      withFlags(writeSnapshot, snap, flags),
      readString,
      opts,
    );
  }

  snapshotDelete(snap: SnapshotRef, flags = 0, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_SNAPSHOT_DELETE,
      withFlags(writeSnapshot, snap, flags),
      undefined,
      opts,
    );
  }

  // ---- backup jobs ----

  /**
   * Starts a backup job (push or pull mode, per the backup XML), optionally
   * creating a checkpoint atomically with it. Returns once the job started;
   * its end is a job-completed event (or job stats with JobStatsFlags.COMPLETED).
   */
  backupBegin(dom: DomainRef, backupXml: string, checkpointXml?: string, flags = 0, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_BACKUP_BEGIN,
      (w) => {
        writeDomain(w, dom);
        writeString(w, backupXml);
        writeOptString(w, checkpointXml);
        w.uint(flags);
      },
      undefined,
      opts,
    );
  }

  backupGetXmlDesc(dom: DomainRef, flags = 0, opts?: CallOptions): Promise<string> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_BACKUP_GET_XML_DESC,
      withFlags(writeDomain, dom, flags),
      readString,
      opts,
    );
  }

  getJobInfo(dom: DomainRef, opts?: CallOptions): Promise<JobInfo> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_GET_JOB_INFO,
      (w) => writeDomain(w, dom),
      (r) => {
        const type = r.int();
        const n = (): number => Number(r.uhyper());
        return {
          type,
          timeElapsedMs: n(),
          timeRemainingMs: n(),
          dataTotal: n(),
          dataProcessed: n(),
          dataRemaining: n(),
          memTotal: n(),
          memProcessed: n(),
          memRemaining: n(),
          fileTotal: n(),
          fileProcessed: n(),
          fileRemaining: n(),
        };
      },
      opts,
    );
  }

  /** Job statistics (JobStatsFlags.COMPLETED: those of the job that just ended). */
  getJobStats(dom: DomainRef, flags = 0, opts?: CallOptions): Promise<JobStats> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_GET_JOB_STATS,
      withFlags(writeDomain, dom, flags),
      (r) => ({ type: r.int(), stats: paramsToRecord(r.array(readTypedParam, Limits.JOB_STATS)) }),
      opts,
    );
  }

  abortJob(dom: DomainRef, opts?: CallOptions): Promise<void> {
    return this.call(REMOTE_PROGRAM, RemoteProc.DOMAIN_ABORT_JOB, (w) => writeDomain(w, dom), undefined, opts);
  }

  abortJobFlags(dom: DomainRef, flags: number, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_ABORT_JOB_FLAGS,
      withFlags(writeDomain, dom, flags),
      undefined,
      opts,
    );
  }

  // ---- checkpoints ----

  checkpointCreateXml(dom: DomainRef, xml: string, flags = 0, opts?: CallOptions): Promise<CheckpointRef> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_CHECKPOINT_CREATE_XML,
      (w) => {
        writeDomain(w, dom);
        writeString(w, xml);
        w.uint(flags);
      },
      readCheckpoint,
      opts,
    );
  }

  checkpointLookupByName(dom: DomainRef, name: string, opts?: CallOptions): Promise<CheckpointRef> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_CHECKPOINT_LOOKUP_BY_NAME,
      (w) => {
        writeDomain(w, dom);
        writeString(w, name);
        w.uint(0);
      },
      readCheckpoint,
      opts,
    );
  }

  listAllCheckpoints(dom: DomainRef, flags = 0, opts?: CallOptions): Promise<CheckpointRef[]> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_LIST_ALL_CHECKPOINTS,
      (w) => {
        writeDomain(w, dom);
        w.int(1); // need_results: the list, not only its length
        w.uint(flags);
      },
      (r) => {
        const list = r.array(readCheckpoint, Limits.CHECKPOINT_LIST);
        r.int(); // the count again
        return list;
      },
      opts,
    );
  }

  checkpointGetXmlDesc(cp: CheckpointRef, flags = 0, opts?: CallOptions): Promise<string> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_CHECKPOINT_GET_XML_DESC,
      withFlags(writeCheckpoint, cp, flags),
      readString,
      opts,
    );
  }

  checkpointDelete(cp: CheckpointRef, flags = 0, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_CHECKPOINT_DELETE,
      withFlags(writeCheckpoint, cp, flags),
      undefined,
      opts,
    );
  }

  // ---- block jobs ----

  /** Starts a block commit of `disk` (`vda`); base/top undefined mean libvirt's defaults. */
  blockCommit(
    dom: DomainRef,
    disk: string,
    c: { base?: string; top?: string; bandwidth?: bigint; flags?: number } = {},
    opts?: CallOptions,
  ): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_BLOCK_COMMIT,
      (w) => {
        writeDomain(w, dom);
        writeString(w, disk);
        writeOptString(w, c.base);
        writeOptString(w, c.top);
        w.uhyper(c.bandwidth ?? 0n);
        w.uint(c.flags ?? 0);
      },
      undefined,
      opts,
    );
  }

  /** Ends a block job (BlockJobAbortFlags.PIVOT completes an active commit or a copy). */
  blockJobAbort(dom: DomainRef, disk: string, flags = 0, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_BLOCK_JOB_ABORT,
      (w) => {
        writeDomain(w, dom);
        writeString(w, disk);
        w.uint(flags);
      },
      undefined,
      opts,
    );
  }

  /** Limits a disk's block job (a backup's copy too) to `bandwidth` MiB/s (BlockJobSpeedFlags.BYTES: bytes/s); 0 lifts the limit. */
  blockJobSetSpeed(dom: DomainRef, disk: string, bandwidth: bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_BLOCK_JOB_SET_SPEED,
      (w) => {
        writeDomain(w, dom);
        writeString(w, disk);
        w.uhyper(bandwidth);
        w.uint(flags);
      },
      undefined,
      opts,
    );
  }

  getBlockJobInfo(dom: DomainRef, disk: string, flags = 0, opts?: CallOptions): Promise<BlockJobInfo> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.DOMAIN_GET_BLOCK_JOB_INFO,
      (w) => {
        writeDomain(w, dom);
        writeString(w, disk);
        w.uint(flags);
      },
      (r) => ({ found: r.int() !== 0, type: r.int(), bandwidth: r.uhyper(), cur: r.uhyper(), end: r.uhyper() }),
      opts,
    );
  }

  // ---- events ----

  /**
   * Asks libvirtd for one kind of domain event (DomainEventId), for one
   * domain or all; resolves with the callback id the events will carry.
   * Listen with onDomainEvent(); undo with deregisterDomainEvent().
   */
  registerDomainEvent(eventId: number, dom?: DomainRef, opts?: CallOptions): Promise<number> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
      (w) => {
        w.int(eventId);
        w.optional(dom, writeDomain);
      },
      (r) => r.int(),
      opts,
    );
  }

  deregisterDomainEvent(callbackId: number, opts?: CallOptions): Promise<void> {
    return this.call(
      REMOTE_PROGRAM,
      RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
      (w) => w.int(callbackId),
      undefined,
      opts,
    );
  }

  /** Calls `listener` with every decoded domain event from now on; returns the unsubscribe function. */
  onDomainEvent(listener: (e: DomainEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** The sequence number of the last decoded event (0: none yet); pass it as `since` to miss nothing after now. */
  lastEventSeq(): number {
    return this.seq;
  }

  /**
   * Resolves with the first event after `since` that `pred` accepts (events
   * still in the backlog count); TIMEOUT after `timeoutMs` (default 30 s),
   * the connection's error if it closes first.
   */
  waitForDomainEvent<E extends DomainEvent>(pred: (e: DomainEvent) => e is E, opts?: EventWaitOptions): Promise<E>;
  waitForDomainEvent(pred: (e: DomainEvent) => boolean, opts?: EventWaitOptions): Promise<DomainEvent>;
  waitForDomainEvent(pred: (e: DomainEvent) => boolean, opts: EventWaitOptions = {}): Promise<DomainEvent> {
    const since = opts.since ?? this.seq;
    const hit = this.backlog.find((b) => b.seq > since && pred(b.event));
    if (hit) return Promise.resolve(hit.event);
    if (this.rpc.closed)
      return Promise.reject(new QuiesceError('CHANNEL_GONE', `${this.rpc.address}: connection closed`));
    const what = opts.what ?? 'domain event';
    const timeoutMs = opts.timeoutMs ?? 30_000;
    return new Promise<DomainEvent>((resolve, reject) => {
      const signal = opts.signal;
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        off();
        offClose();
      };
      const timer = setTimeout(() => {
        done();
        reject(new QuiesceError('TIMEOUT', `${this.rpc.address}: no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onDomainEvent((e) => {
        if (!pred(e)) return;
        done();
        resolve(e);
      });
      const offClose = this.rpc.onClose((err) => {
        done();
        reject(err);
      });
      const onAbort = (): void => {
        done();
        reject(
          new QuiesceError('TIMEOUT', `${this.rpc.address}: waiting for ${what} aborted`, { cause: signal?.reason }),
        );
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  // ---- plumbing ----

  /**
   * One call: encodes the arguments, sends, decodes the reply and insists the
   * payload held nothing else. Undecodable bytes are OUT_OF_SYNC.
   */
  private async call<T = void>(
    program: number,
    procedure: number,
    encode: Encode,
    decode?: (r: XdrReader) => T,
    opts: CallOptions = {},
  ): Promise<T> {
    const name = procedureName(program, procedure);
    let args: Buffer | undefined;
    if (encode) {
      const w = new XdrWriter();
      encode(w);
      args = w.toBuffer();
    }
    const version = program === QEMU_PROGRAM ? QEMU_PROTOCOL_VERSION : REMOTE_PROTOCOL_VERSION;
    const payload = await this.rpc.call(program, version, procedure, args, { ...opts, name });
    try {
      const r = new XdrReader(payload);
      const value = decode ? decode(r) : (undefined as T);
      r.end(`reply to ${name}`);
      return value;
    } catch (err) {
      throw new QuiesceError(
        'OUT_OF_SYNC',
        `${this.rpc.address}: undecodable reply to ${name}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
}

/** Arguments of the common `{ thing, unsigned int flags }` shape. */
function withFlags<T>(write: (w: XdrWriter, v: T) => void, v: T, flags: number): (w: XdrWriter) => void {
  return (w) => {
    write(w, v);
    w.uint(flags);
  };
}

function writeMountpoints(w: XdrWriter, dom: DomainRef, mountpoints: readonly string[], flags: number): void {
  writeDomain(w, dom);
  w.array(mountpoints, writeString, Limits.FSFREEZE_MOUNTPOINTS);
  w.uint(flags);
}
