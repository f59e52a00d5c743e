// The libvirt connector over libvirt's RPC protocol against a fake libvirtd: replies parsed as the stream
// client parses them, libvirt's errors mapped to ours (the agent's own error, timeouts, no agent), protocol
// errors (garbage, a dropped connection, an unparsable reply), a restarted domain looked up afresh, one
// connection shared per URI, and the virsh fallback announced once when there is no socket.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError, QuiesceError } from '../../../src/errors.js';
import { LibvirtAgent, MAX_LIBVIRT_COMMAND_BYTES } from '../../../src/guest/connectors/libvirt.js';
import { VirErr } from '../../../src/libvirt/error.js';
import type { Packet } from '../../../src/libvirt/packet.js';
import { QEMU_PROGRAM, QemuProc, REMOTE_PROGRAM, RemoteProc } from '../../../src/libvirt/protocol.js';
import { LibvirtPool } from '../../../src/libvirt/pool.js';
import { readDomain, writeDomain, type DomainRef } from '../../../src/libvirt/types.js';
import { XdrReader, XdrWriter } from '../../../src/libvirt/xdr.js';
import { startFakeLibvirtd, type FakeConn, type FakeLibvirtd } from '../../helpers/fake-libvirtd.js';

let uuidByte = 1;
const newDom = (name: string): DomainRef => ({ name, uuid: Buffer.alloc(16, uuidByte++), id: 7 });

/** What the fake does with one agent command (the request's JSON text in, the call to answer). */
type AgentHandler = (
  request: { execute: string; arguments?: unknown },
  call: Packet,
  conn: FakeConn,
  timeoutSec: number,
) => void;

interface Fake {
  readonly d: FakeLibvirtd;
  readonly uri: string;
  dom: DomainRef;
  lookups: number;
  /** UUIDs the fake no longer knows (a transient domain restarted). */
  readonly gone: Set<string>;
}

async function fake(agent: AgentHandler): Promise<Fake> {
  const f = { dom: newDom('vm1'), lookups: 0, gone: new Set<string>() } as Partial<Fake> & {
    dom: DomainRef;
    lookups: number;
    gone: Set<string>;
  };
  const d = await startFakeLibvirtd((call, conn) => {
    const r = new XdrReader(call.payload);
    if (call.header.program === REMOTE_PROGRAM && call.header.procedure === RemoteProc.DOMAIN_LOOKUP_BY_NAME) {
      f.lookups++;
      const w = new XdrWriter();
      writeDomain(w, f.dom);
      return conn.reply(call, w.toBuffer());
    }
    if (call.header.program === QEMU_PROGRAM && call.header.procedure === QemuProc.DOMAIN_AGENT_COMMAND) {
      const dom = readDomain(r);
      const text = r.string();
      const timeout = r.int();
      if (f.gone.has(dom.uuid.toString('hex')))
        return conn.replyError(call, {
          code: VirErr.NO_DOMAIN,
          message: `Domain not found: no domain with matching uuid`,
        });
      return agent(JSON.parse(text) as { execute: string }, call, conn, timeout);
    }
    conn.replyError(call, { code: VirErr.NO_SUPPORT, message: 'this function is not supported by the fake' });
  });
  return Object.assign(f, { d, uri: `qemu+unix:///system?socket=${d.path}` }) as Fake;
}

const ok =
  (value: string): AgentHandler =>
  (_req, call, conn) => {
    const w = new XdrWriter();
    w.optional(value, (x, v) => x.string(v));
    conn.reply(call, w.toBuffer());
  };

describe('libvirt connector over RPC (fake libvirtd)', () => {
  let f: Fake | undefined;
  let pool: LibvirtPool;
  const agents: LibvirtAgent[] = [];
  const agent = (o: { uri?: string; domain?: string; onWarning?: (m: string) => void } = {}): LibvirtAgent => {
    const a = new LibvirtAgent(
      { uri: o.uri ?? f!.uri, domain: o.domain ?? 'vm1', virsh: '/nonexistent/virsh' },
      { pool, ...(o.onWarning ? { onWarning: o.onWarning } : {}) },
    );
    agents.push(a);
    return a;
  };
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.close();
    await pool?.closeAll();
    await f?.d.close();
    f = undefined;
  });
  const setup = async (h: AgentHandler): Promise<Fake> => {
    pool = new LibvirtPool();
    f = await fake(h);
    return f;
  };

  test('a reply is parsed like the stream client does: integers beyond 2^53 stay exact (bigint)', async () => {
    await setup(ok('{"return":{"big":18446744073709551615,"small":42,"s":"x"}}'));
    assert.deepEqual(await agent().execute('guest-get-time'), { big: 18446744073709551615n, small: 42, s: 'x' });
  });

  test('the request carries the command, its arguments and the agent timeout in whole seconds', async () => {
    let seen: { req: unknown; timeout: number } | undefined;
    await setup((req, call, conn, timeout) => {
      seen = { req, timeout };
      ok('{"return":1}')(req, call, conn, timeout);
    });
    assert.equal(
      await agent().execute('guest-fsfreeze-freeze-list', { mountpoints: ['/data'] }, { timeoutMs: 2500 }),
      1,
    );
    assert.deepEqual(seen, {
      req: { execute: 'guest-fsfreeze-freeze-list', arguments: { mountpoints: ['/data'] } },
      timeout: 3,
    });
  });

  test('a command larger than libvirt passes intact is refused (COMMAND_TOO_LARGE) before anything is sent', async () => {
    const seen: string[] = [];
    await setup((req, call, conn, t) => {
      seen.push(req.execute);
      ok('{"return":{"count":1,"eof":false}}')(req, call, conn, t);
    });
    const a = agent();
    const big = Buffer.alloc(MAX_LIBVIRT_COMMAND_BYTES, 0x61).toString('base64');
    const err = await a.execute('guest-file-write', { handle: 1, 'buf-b64': big }).catch((x: unknown) => x);
    assert.ok(err instanceof QuiesceError && err.code === 'COMMAND_TOO_LARGE', String(err));
    assert.match(err.message, /guest-file-write is \d+ bytes of JSON, more than the 131072/);
    assert.deepEqual(seen, [], 'nothing reached libvirt');
    // Just under the limit goes through, and the refusal left nothing to resync.
    const head = JSON.stringify({ execute: 'guest-file-write', arguments: { handle: 1, 'buf-b64': '' } }).length;
    const fits = 'QUFB'.repeat(Math.floor((MAX_LIBVIRT_COMMAND_BYTES - head) / 4));
    assert.deepEqual(await a.execute('guest-file-write', { handle: 1, 'buf-b64': fits }), { count: 1, eof: false });
    assert.deepEqual(seen, ['guest-file-write']);
  });

  test('after a timeout, the next command waits for a guest-sync whose id comes back: late replies are never taken for its own', async () => {
    // The fake plays libvirt with a channel one reply behind: each answer is the previous command's.
    const sent: string[] = [];
    let late: string | undefined;
    let n = 0;
    await setup((req, call, conn) => {
      sent.push(req.execute);
      const own =
        req.execute === 'guest-sync'
          ? JSON.stringify({ return: (req.arguments as { id: number }).id })
          : req.execute === 'guest-file-open'
            ? '{"return":1000}'
            : '{"return":{}}';
      if (n++ === 0) {
        late = own; // the first command times out; its reply comes later
        return;
      }
      const w = new XdrWriter();
      w.optional(late ?? own, (x, v) => x.string(v));
      late = undefined;
      conn.reply(call, w.toBuffer());
    });
    const a = agent();
    const err = await a.execute('guest-file-open', { path: '/x' }, { timeoutMs: 200 }).catch((x: unknown) => x);
    assert.ok(err instanceof QuiesceError && err.code === 'TIMEOUT', String(err));
    // The late {"return":1000} is consumed by a guest-sync, not taken as guest-ping's reply.
    assert.deepEqual(await a.execute('guest-ping'), {});
    assert.deepEqual(sent, ['guest-file-open', 'guest-sync', 'guest-sync', 'guest-ping']);
    // In step again: no more syncs.
    assert.deepEqual(await a.execute('guest-ping'), {});
    assert.equal(sent.length, 5);
  });

  test('a channel that never comes back in step: OUT_OF_SYNC after a bounded number of guest-syncs, no command sent', async () => {
    const sent: string[] = [];
    await setup((req, call, conn, t) => {
      sent.push(req.execute);
      if (sent.length === 1) return; // times out
      ok('{"return":{}}')(req, call, conn, t); // never the id asked for
    });
    const a = agent();
    await assert.rejects(a.execute('guest-ping', undefined, { timeoutMs: 200 }), { code: 'TIMEOUT' });
    const err = await a.execute('guest-fsfreeze-freeze-list', { mountpoints: ['/data'] }).catch((x: unknown) => x);
    assert.ok(err instanceof QuiesceError && err.code === 'OUT_OF_SYNC', String(err));
    assert.ok(!sent.includes('guest-fsfreeze-freeze-list'), 'the freeze was never sent');
    assert.ok(sent.filter((c) => c === 'guest-sync').length <= 8);
  });

  const cases: [string, { code: number; message: string }, string, RegExp][] = [
    [
      "the agent's own error reply (libvirt's wrapping) → AgentError with the agent's desc",
      {
        code: VirErr.INTERNAL_ERROR,
        message:
          "internal error: unable to execute QEMU agent command 'guest-file-open': failed to open file '/x' (mode: 'r'): No such file or directory",
      },
      'AGENT_ERROR',
      /^guest-file-open: failed to open file '\/x' \(mode: 'r'\): No such file or directory$/,
    ],
    [
      'libvirt 9.0: an agent that did not answer in time → TIMEOUT',
      { code: VirErr.AGENT_UNRESPONSIVE, message: 'Guest agent is not responding: Guest agent not available for now' },
      'TIMEOUT',
      /not available for now/,
    ],
    [
      'an agent that is not connected → CHANNEL_GONE',
      { code: VirErr.AGENT_UNRESPONSIVE, message: 'Guest agent is not responding: QEMU guest agent is not connected' },
      'CHANNEL_GONE',
      /not connected/,
    ],
    [
      'newer libvirt: AGENT_COMMAND_TIMEOUT → TIMEOUT',
      { code: VirErr.AGENT_COMMAND_TIMEOUT, message: 'Guest agent command timed out' },
      'TIMEOUT',
      /timed out/,
    ],
    [
      'a domain that is not running → CHANNEL_GONE',
      { code: VirErr.OPERATION_INVALID, message: 'Requested operation is not valid: domain is not running' },
      'CHANNEL_GONE',
      /not running/,
    ],
  ];
  for (const [title, e, code, message] of cases) {
    test(title, async () => {
      await setup((_r, call, conn) => conn.replyError(call, e));
      const err = await agent()
        .execute('guest-file-open', { path: '/x' })
        .catch((x: unknown) => x);
      assert.ok(err instanceof QuiesceError, String(err));
      assert.equal(err.code, code);
      if (code === 'AGENT_ERROR') {
        assert.ok(err instanceof AgentError);
        assert.match(err.message, message);
      } else assert.match(err.message, message);
      assert.equal(err.guest, `libvirt:${f!.uri}/vm1`);
    });
  }

  test('guest-shutdown: silence (libvirt times out on the reply that never comes) is success; a refusal is not', async () => {
    let n = 0;
    await setup((_r, call, conn) =>
      n++ === 0
        ? conn.replyError(call, {
            code: VirErr.INTERNAL_ERROR,
            message: "internal error: unable to execute QEMU agent command 'guest-shutdown': Invalid parameter 'mode'",
          })
        : conn.replyError(call, {
            code: VirErr.AGENT_UNRESPONSIVE,
            message: 'Guest agent is not responding: Guest agent not available for now',
          }),
    );
    const a = agent();
    await assert.rejects(a.execute('guest-shutdown', { mode: 'sideways' }), AgentError);
    assert.equal(await a.execute('guest-shutdown'), undefined);
  });

  test('libvirt silent: TIMEOUT within the timeout plus a small margin; abort ends the wait at once', async () => {
    await setup(() => undefined);
    const a = agent();
    const t0 = performance.now();
    const err = await a.execute('guest-ping', undefined, { timeoutMs: 300 }).catch((x: unknown) => x);
    const took = performance.now() - t0;
    assert.ok(err instanceof QuiesceError && err.code === 'TIMEOUT', String(err));
    assert.ok(took < 300 + 2500, `${took} ms`);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const t1 = performance.now();
    const aborted = await a
      .execute('guest-ping', undefined, { timeoutMs: 10_000, signal: ac.signal })
      .catch((x: unknown) => x);
    assert.ok(aborted instanceof QuiesceError && aborted.code === 'TIMEOUT' && /aborted/.test(aborted.message));
    assert.ok(performance.now() - t1 < 1000);
  });

  test('a reply that is not JSON → OUT_OF_SYNC', async () => {
    await setup(ok('{"return": tru'));
    const err = await agent()
      .execute('guest-ping')
      .catch((x: unknown) => x);
    assert.ok(err instanceof QuiesceError && err.code === 'OUT_OF_SYNC', String(err));
  });

  test('garbage on the wire ends the connection (OUT_OF_SYNC); the next command reconnects', async () => {
    let n = 0;
    await setup((req, call, conn, t) => {
      if (n++ === 0)
        conn.write(Buffer.from([0, 0, 0, 2, 1, 2, 3, 4])); // a length below the header's
      else ok('{"return":{}}')(req, call, conn, t);
    });
    const a = agent();
    // Not a command safe to repeat: the error reaches the caller.
    const err = await a.execute('guest-fsfreeze-thaw').catch((x: unknown) => x);
    assert.ok(err instanceof QuiesceError && err.code === 'OUT_OF_SYNC', String(err));
    assert.match(err.message, /shorter than a header/);
    assert.deepEqual(await a.execute('guest-ping'), {});
    assert.equal(f!.d.connections.length, 2);
  });

  test('a connection dropped mid-call: a safe command is sent again on a new connection, a freeze is not', async () => {
    let n = 0;
    await setup((req, call, conn, t) => {
      if (n++ % 2 === 0) conn.socket.destroy();
      else ok('{"return":1}')(req, call, conn, t);
    });
    const a = agent();
    assert.equal(await a.execute('guest-fsfreeze-status'), 1);
    assert.equal(f!.d.connections.length, 2);
    const err = await a.execute('guest-fsfreeze-freeze-list', { mountpoints: ['/data'] }).catch((x: unknown) => x);
    assert.ok(err instanceof QuiesceError && err.code === 'CHANNEL_GONE', String(err));
    assert.equal(n, 3, 'the freeze was sent once');
  });

  test('a restarted (transient) domain: the stale handle is refused, looked up afresh by name, and the command runs', async () => {
    const fk = await setup(ok('{"return":{}}'));
    const a = agent();
    await a.execute('guest-ping');
    assert.equal(fk.lookups, 1);
    await a.execute('guest-ping');
    assert.equal(fk.lookups, 1, 'the handle is kept per connection');
    fk.gone.add(fk.dom.uuid.toString('hex'));
    fk.dom = newDom('vm1');
    assert.deepEqual(await a.execute('guest-ping'), {});
    assert.equal(fk.lookups, 2);
  });

  test('guests on one URI share one connection; it closes a while after the last one is done', async () => {
    await setup(ok('{"return":{}}'));
    const a = agent();
    const b = agent({ domain: 'vm2' });
    await Promise.all([a.execute('guest-ping'), b.execute('guest-ping')]);
    assert.equal(f!.d.connections.length, 1);
    assert.equal(pool.openConnections, 1);
    await a.close();
    await b.close();
    const c = agent();
    await c.execute('guest-ping');
    assert.equal(f!.d.connections.length, 1, 'a guest right after the others reuses the lingering connection');
  });
});

describe('LibvirtPool.warm: the connection and domain lookups before the connect step (fake libvirtd)', () => {
  let f: Fake | undefined;
  let pool: LibvirtPool | undefined;
  afterEach(async () => {
    await pool?.closeAll();
    await f?.d.close();
    f = undefined;
  });
  const settle = async (until: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !until(); i++) await new Promise((r) => setTimeout(r, 5));
  };

  test("opens the URI's connection and looks the domains up; the connector's first command needs neither again", async () => {
    f = await fake(ok('{"return":{}}'));
    pool = new LibvirtPool();
    pool.warm(f.uri, ['vm1']);
    await settle(() => f!.lookups === 1);
    assert.equal(f.d.connections.length, 1);
    assert.equal(pool.openConnections, 1, 'held open (lingering) for the connect step');
    const a = new LibvirtAgent({ uri: f.uri, domain: 'vm1', virsh: '/nonexistent/virsh' }, { pool });
    assert.deepEqual(await a.execute('guest-ping'), {});
    assert.equal(f.d.connections.length, 1, 'no second connection');
    assert.equal(f.lookups, 1, 'no second lookup');
    await a.close();
  });

  test('a failure is left for the connect step, which reports it; a malformed URI or a daemon gone throw nothing here', async () => {
    f = await fake(ok('{"return":{}}'));
    pool = new LibvirtPool();
    const unreachable = `qemu+unix:///system?socket=${f.d.path}.gone`;
    assert.doesNotThrow(() => pool!.warm('qemu+nosuch://', ['vm1']));
    pool.warm(unreachable, ['vm1']);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(pool.openConnections, 0);
    const errors: string[] = [];
    const a = new LibvirtAgent(
      { uri: unreachable, domain: 'vm1', virsh: '/nonexistent/virsh' },
      { pool, onWarning: (m) => errors.push(m) },
    );
    await assert.rejects(a.execute('guest-ping'));
    assert.match(errors.join('\n'), /\.gone/, 'the connect step says why, as without the warm-up');
    await a.close();
  });
});

describe('libvirt connector: the virsh fallback', () => {
  test('no libvirtd socket: virsh runs the command, and the fallback is announced once per URI', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virsh-fallback-'));
    try {
      const virsh = join(dir, 'virsh');
      writeFileSync(virsh, '#!/bin/sh\necho "$@" >> "$0.argv"\necho \'{"return":{"via":"virsh"}}\'\n');
      chmodSync(virsh, 0o755);
      const warnings: string[] = [];
      const pool = new LibvirtPool();
      const uri = `qemu+unix:///system?socket=${join(dir, 'no-such-sock')}`;
      for (let i = 0; i < 2; i++) {
        const a = new LibvirtAgent({ uri, domain: 'vm1', virsh }, { pool, onWarning: (m) => warnings.push(m) });
        assert.deepEqual(await a.execute('guest-info'), { via: 'virsh' });
        assert.equal(a.via, 'virsh');
        await a.close();
      }
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0]!, /no libvirtd socket .*through virsh instead/);
      const tls = new LibvirtAgent(
        { uri: 'qemu+tls://host.example/system', domain: 'vm1', virsh },
        { pool, onWarning: (m) => warnings.push(m) },
      );
      assert.deepEqual(await tls.execute('guest-ping'), { via: 'virsh' });
      assert.match(warnings[1]!, /transport 'tls'/);
      await tls.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
