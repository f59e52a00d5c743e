import { QuiesceError } from '../errors.js';
import type { CallOptions } from './client.js';
import { LibvirtError, VirErr } from './error.js';
import { LibvirtConnection } from './remote.js';
import { existingSocket, openSsh, routeFor, type LibvirtRoute, type SshTransport } from './transport.js';
import type { DomainRef } from './types.js';

/** How long a connection nobody holds stays open (unref'd: it never keeps the process alive). */
export const LINGER_MS = 3000;

/**
 * The URI cannot be reached natively (a transport this client does not
 * speak, or no libvirtd socket on this machine): callers fall back to virsh.
 */
export class NativeUnavailable extends QuiesceError {
  constructor(
    readonly uri: string,
    readonly reason: string,
    cause?: unknown,
  ) {
    super('CONNECT_FAILED', `${uri}: not reachable natively: ${reason}`, cause === undefined ? {} : { cause });
    this.name = 'NativeUnavailable';
  }
}

export interface PoolOptions {
  readonly connectTimeoutMs?: number;
  /** Environment for the default URI and the session socket (tests). */
  readonly env?: NodeJS.ProcessEnv;
}

interface Entry {
  readonly key: string;
  readonly route: LibvirtRoute;
  users: number;
  opening: Promise<LibvirtConnection> | undefined;
  conn: LibvirtConnection | undefined;
  /** Domain handles by name, for `conn` (a new connection starts empty). */
  domains: Map<string, Promise<DomainRef>>;
  linger: NodeJS.Timeout | undefined;
  /** Connections opened so far (the first one included). */
  opens: number;
}

/**
 * One libvirt connection per URI for everything in this process that talks
 * to that URI at the same time (the guests of a run, their agents and
 * snapshot providers): leases share it, the last release closes it after
 * LINGER_MS (so guests run one after another still share it), a dropped
 * connection is opened again on the next use.
 */
export class LibvirtPool {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly opts: PoolOptions = {}) {}

  /** A share of the connection to `uri` (opened on first use). Throws CONFIG for a malformed URI. */
  lease(uri: string | undefined, guest?: string): LibvirtLease {
    const route = routeFor(uri, this.opts.env);
    const key = route.uri;
    let e = this.entries.get(key);
    if (!e) {
      e = {
        key,
        route,
        users: 0,
        opening: undefined,
        conn: undefined,
        domains: new Map(),
        linger: undefined,
        opens: 0,
      };
      this.entries.set(key, e);
    }
    e.users++;
    if (e.linger) {
      clearTimeout(e.linger);
      e.linger = undefined;
    }
    e.conn?.rpc.ref();
    return new LibvirtLease(this, e, guest);
  }

  /**
   * Opens the connection to `uri` and looks up `domains` now, in the background, and gives the share
   * back once done: the connect step that follows finds them ready (or still opening, and waits for
   * that). A command with a frozen window calls it once its config is read, so that libvirtd's part of
   * the handshake overlaps the run's own start. A failure is dropped here: the connect step tries again
   * and reports it (a URI only virsh reaches, a malformed one, a daemon that is down).
   */
  warm(uri: string | undefined, domains: readonly string[]): void {
    let lease: LibvirtLease;
    try {
      lease = this.lease(uri);
    } catch {
      return;
    }
    void Promise.all(domains.map((d) => lease.domain(d)))
      .catch(() => undefined)
      .finally(() => lease.release());
  }

  /** Connections currently open (tests). */
  get openConnections(): number {
    return [...this.entries.values()].filter((e) => e.conn && !e.conn.closed).length;
  }

  /** Closes every connection at once (tests, shutdown). */
  async closeAll(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const e of all) {
      clearTimeout(e.linger);
      await e.conn?.close({ timeoutMs: 1000 });
    }
  }

  /** @internal The entry's live connection, opened (again) if needed. */
  async connection(e: Entry, guest: string | undefined): Promise<LibvirtConnection> {
    if (e.conn && !e.conn.closed) return e.conn;
    e.opening ??= this.open(e, guest).finally(() => (e.opening = undefined));
    return e.opening;
  }

  /** @internal */
  release(e: Entry): void {
    e.users--;
    if (e.users > 0) return;
    const conn = e.conn;
    if (!conn) {
      this.entries.delete(e.key);
      return;
    }
    conn.rpc.unref();
    e.linger = setTimeout(() => {
      if (e.users > 0) return;
      this.entries.delete(e.key);
      void conn.close({ timeoutMs: 1000 });
    }, LINGER_MS);
    e.linger.unref();
  }

  private async open(e: Entry, guest: string | undefined): Promise<LibvirtConnection> {
    const r = e.route;
    const common = {
      uri: r.kind === 'virsh' ? r.uri : r.name,
      connectTimeoutMs: this.opts.connectTimeoutMs ?? 5000,
      ...(guest !== undefined ? { guest } : {}),
    };
    let conn: LibvirtConnection;
    if (r.kind === 'virsh') throw new NativeUnavailable(r.uri, r.reason);
    if (r.kind === 'unix') {
      const socket = existingSocket(r);
      if (!socket) throw new NativeUnavailable(r.uri, `no libvirtd socket (${r.sockets.join(', ')})`);
      try {
        conn = await LibvirtConnection.open({ ...common, socketPath: socket });
      } catch (err) {
        const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
        // A stale socket file with no daemon behind it: virsh says why better than we can.
        if (code === 'ECONNREFUSED' || code === 'ENOENT') throw new NativeUnavailable(r.uri, `${socket}: ${code}`, err);
        throw err;
      }
    } else {
      let t: SshTransport | undefined;
      try {
        conn = await LibvirtConnection.open({
          ...common,
          transport: async () => (t = await openSsh(r)),
        });
      } catch (err) {
        const said = t?.stderr();
        if (said && err instanceof QuiesceError)
          throw new QuiesceError(err.code, `${err.message} (ssh: ${said.split('\n').slice(-3).join(' / ')})`, {
            cause: err,
            ...(guest !== undefined ? { guest } : {}),
          });
        throw err;
      }
    }
    e.opens++;
    e.conn = conn;
    e.domains = new Map();
    if (e.users === 0) conn.rpc.unref();
    return conn;
  }
}

/** The process's pool: connectors and snapshot providers of a run share it. */
export const libvirtPool = new LibvirtPool();

/**
 * One user's share of a URI's connection: the connection, domain handles by
 * name, and calls that survive a dropped connection or a restarted domain.
 */
export class LibvirtLease {
  private released = false;

  /** @internal use LibvirtPool.lease() */
  constructor(
    private readonly pool: LibvirtPool,
    private readonly entry: Entry,
    private readonly guest: string | undefined,
  ) {}

  get uri(): string {
    return this.entry.route.uri;
  }

  get route(): LibvirtRoute {
    return this.entry.route;
  }

  /** The connection (opened, or opened again after it dropped). */
  connection(): Promise<LibvirtConnection> {
    if (this.released) return Promise.reject(new QuiesceError('CHANNEL_GONE', `${this.uri}: lease released`));
    return this.pool.connection(this.entry, this.guest);
  }

  /** The domain's handle on the current connection (looked up by name once per connection). */
  async domain(name: string, opts?: CallOptions): Promise<{ conn: LibvirtConnection; dom: DomainRef }> {
    const conn = await this.connection();
    let p = this.entry.domains.get(name);
    if (!p) {
      p = conn.lookupDomain(name, opts);
      this.entry.domains.set(name, p);
      // A failed lookup is not remembered.
      p.catch(() => {
        if (this.entry.domains.get(name) === p) this.entry.domains.delete(name);
      });
    }
    return { conn, dom: await p };
  }

  /**
   * Runs `fn` on the domain. A handle gone stale (the domain was destroyed and
   * started again: a transient domain gets a new UUID) is looked up afresh and
   * `fn` runs again — libvirt refused it before doing anything. When the
   * connection drops during `fn`, the next call reconnects; `fn` runs again at
   * once only with `retryOnDrop` (commands safe to repeat).
   */
  async withDomain<T>(
    name: string,
    fn: (conn: LibvirtConnection, dom: DomainRef) => Promise<T>,
    o: { readonly retryOnDrop?: boolean; readonly lookup?: CallOptions } = {},
  ): Promise<T> {
    let fresh = false;
    let reconnected = false;
    for (;;) {
      const { conn, dom } = await this.domain(name, o.lookup);
      try {
        return await fn(conn, dom);
      } catch (err) {
        if (err instanceof LibvirtError && err.virCode === VirErr.NO_DOMAIN && !fresh) {
          fresh = true;
          if (this.entry.domains.get(name)) this.entry.domains.delete(name);
          continue;
        }
        if (conn.closed && !(err instanceof LibvirtError) && o.retryOnDrop && !reconnected) {
          reconnected = true;
          continue;
        }
        throw err;
      }
    }
  }

  /** Gives the share back (the connection closes LINGER_MS after the last one); safe to call twice. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.pool.release(this.entry);
  }
}
