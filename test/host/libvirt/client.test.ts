// The RPC connection against a scripted fake libvirtd: serials, concurrent calls, error replies, timeouts,
// keepalive both ways, events, and a hostile peer (garbage, a huge length, truncation, unknown serials).
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../../src/errors.js';
import { RpcClient, KEEPALIVE_PROGRAM, KeepaliveProc } from '../../../src/libvirt/client.js';
import { LibvirtError, VirErr } from '../../../src/libvirt/error.js';
import { encodePacket, MessageStatus, MessageType, type Packet } from '../../../src/libvirt/packet.js';
import { REMOTE_PROGRAM, RemoteProc } from '../../../src/libvirt/protocol.js';
import { XdrWriter } from '../../../src/libvirt/xdr.js';
import { startFakeLibvirtd, type CallHandler, type FakeLibvirtd } from '../../helpers/fake-libvirtd.js';

const P = REMOTE_PROGRAM;
const u32 = (n: number): Buffer => new XdrWriter().uint(n).toBuffer();

describe('libvirt RPC client (against a fake libvirtd)', () => {
  let fake: FakeLibvirtd | undefined;
  let client: RpcClient | undefined;
  afterEach(async () => {
    client?.close();
    client = undefined;
    await fake?.close();
    fake = undefined;
  });

  const start = async (handler: CallHandler, opts: { callTimeoutMs?: number; maxPacketBytes?: number } = {}) => {
    fake = await startFakeLibvirtd(handler, { handshake: false });
    client = await RpcClient.connect(fake.path, opts);
    return client;
  };
  const call = (c: RpcClient, procedure: number, name = `proc-${procedure}`, timeoutMs?: number) =>
    c.call(P, 1, procedure, undefined, { name, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });

  test('each call gets a new serial and its reply is the payload of the packet with that serial', async () => {
    const c = await start((p, conn) => conn.reply(p, u32(p.header.serial * 10)));
    const a = await call(c, 4);
    const b = await call(c, 4);
    const serials = fake!.connections[0]!.received.map((p) => p.header.serial);
    assert.equal(serials.length, 2);
    assert.notEqual(serials[0], serials[1]);
    assert.equal(a.readUInt32BE(0), serials[0]! * 10);
    assert.equal(b.readUInt32BE(0), serials[1]! * 10);
    const h = fake!.connections[0]!.received[0]!.header;
    assert.deepEqual(
      [h.program, h.version, h.procedure, h.type, h.status],
      [P, 1, 4, MessageType.Call, MessageStatus.Ok],
    );
  });

  test('concurrent calls are matched by serial whatever order the replies come in', async () => {
    const held: Packet[] = [];
    const c = await start((p, conn) => {
      held.push(p);
      if (held.length === 3) for (const q of [held[2]!, held[0]!, held[1]!]) conn.reply(q, u32(q.header.procedure));
    });
    const got = await Promise.all([call(c, 11), call(c, 22), call(c, 33)]);
    assert.deepEqual(
      got.map((b) => b.readUInt32BE(0)),
      [11, 22, 33],
    );
  });

  test("an error reply becomes a LibvirtError with libvirt's code, domain and message", async () => {
    const c = await start((p, conn) =>
      conn.replyError(p, {
        code: VirErr.NO_DOMAIN,
        domain: 10,
        message: "Domain not found: no domain with matching name 'x'",
      }),
    );
    const err = await call(c, RemoteProc.DOMAIN_LOOKUP_BY_NAME, 'domain-lookup-by-name').catch((e: unknown) => e);
    assert.ok(err instanceof LibvirtError, String(err));
    assert.equal(err.code, 'AGENT_ERROR');
    assert.equal(err.virCode, VirErr.NO_DOMAIN);
    assert.equal(err.virDomain, 10);
    assert.equal(err.procedure, 'domain-lookup-by-name');
    assert.equal(err.libvirtMessage, "Domain not found: no domain with matching name 'x'");
    assert.match(err.message, /domain-lookup-by-name: Domain not found/);
  });

  test("libvirt's timeout and agent-gone errors map to TIMEOUT and CHANNEL_GONE", async () => {
    const codes = [VirErr.AGENT_COMMAND_TIMEOUT, VirErr.OPERATION_TIMEOUT, VirErr.AGENT_UNRESPONSIVE];
    const c = await start((p, conn) => conn.replyError(p, { code: p.header.procedure, message: 'x' }));
    const got = [];
    for (const code of codes) got.push(((await call(c, code).catch((e: unknown) => e)) as QuiesceError).code);
    assert.deepEqual(got, ['TIMEOUT', 'TIMEOUT', 'CHANNEL_GONE']);
  });

  test('a call without a reply times out; the late reply is dropped as stray and the connection goes on', async () => {
    const held: Packet[] = [];
    const c = await start((p, conn) => {
      if (p.header.procedure === 1) held.push(p);
      else conn.reply(p, u32(5));
    });
    const err = await call(c, 1, 'slow', 50).catch((e: unknown) => e);
    assert.ok(err instanceof QuiesceError && err.code === 'TIMEOUT', String(err));
    assert.match(err.message, /no reply to slow within 50 ms/);
    fake!.connections[0]!.reply(held[0]!, u32(1));
    assert.equal((await call(c, 2)).readUInt32BE(0), 5);
    assert.equal(c.stats.strayReplies, 1);
    assert.equal(c.inFlight, 0);
  });

  test('an aborted call rejects at once with TIMEOUT', async () => {
    const c = await start(() => undefined);
    const ac = new AbortController();
    const pending = c.call(P, 1, 1, undefined, { name: 'x', signal: ac.signal });
    ac.abort(new Error('budget'));
    await assert.rejects(pending, (e: unknown) => e instanceof QuiesceError && e.code === 'TIMEOUT');
    assert.equal(c.inFlight, 0);
  });

  test("answers the daemon's keepalive PING with a PONG (type Message, serial 0, no payload)", async () => {
    const c = await start(() => undefined);
    const conn = fake!.connections[0]!;
    conn.message(KEEPALIVE_PROGRAM, KeepaliveProc.PING);
    for (let i = 0; i < 100 && conn.received.length === 0; i++) await sleep(5);
    const pong = conn.received[0];
    assert.ok(pong, 'a PONG came back');
    assert.deepEqual(pong.header, {
      program: KEEPALIVE_PROGRAM,
      version: 1,
      procedure: KeepaliveProc.PONG,
      type: MessageType.Message,
      serial: 0,
      status: MessageStatus.Ok,
    });
    assert.equal(pong.payload.length, 0);
    assert.equal(c.stats.pingsAnswered, 1);
  });

  test('ping() sends a PING and resolves when the PONG arrives', async () => {
    const c = await start((p, conn) => {
      if (p.header.program === KEEPALIVE_PROGRAM && p.header.procedure === KeepaliveProc.PING)
        conn.message(KEEPALIVE_PROGRAM, KeepaliveProc.PONG);
    });
    const ms = await c.ping({ timeoutMs: 1000 });
    assert.ok(ms >= 0 && ms < 1000);
  });

  test('Message packets of other programs go to the message listeners, with their payload', async () => {
    const c = await start(() => undefined);
    const seen: [number, number, string][] = [];
    c.onMessage((m) => seen.push([m.program, m.procedure, m.payload.toString('hex')]));
    c.onMessage(() => {
      throw new Error('a buggy listener');
    });
    fake!.connections[0]!.message(P, RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, u32(3));
    fake!.connections[0]!.message(P, RemoteProc.DOMAIN_EVENT_BLOCK_JOB_2, u32(4));
    for (let i = 0; i < 100 && seen.length < 2; i++) await sleep(5);
    assert.deepEqual(seen, [
      [P, RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, '00000003'],
      [P, RemoteProc.DOMAIN_EVENT_BLOCK_JOB_2, '00000004'],
    ]);
  });

  test('closing fails the calls in flight with CHANNEL_GONE; later calls fail at once', async () => {
    const c = await start(() => undefined);
    const pending = call(c, 1);
    c.close();
    await assert.rejects(pending, (e: unknown) => e instanceof QuiesceError && e.code === 'CHANNEL_GONE');
    await assert.rejects(call(c, 2), /client closed/);
    assert.equal(c.closed, true);
  });

  test('the daemon going away fails the calls in flight with CHANNEL_GONE', async () => {
    const c = await start((_p, conn) => conn.socket.destroy());
    await assert.rejects(call(c, 1), (e: unknown) => e instanceof QuiesceError && e.code === 'CHANNEL_GONE');
  });

  test('connecting to a socket nobody listens on is CONNECT_FAILED', async () => {
    await assert.rejects(
      RpcClient.connect('/nonexistent/libvirt-sock'),
      (e: unknown) => e instanceof QuiesceError && e.code === 'CONNECT_FAILED' && /cannot connect/.test(e.message),
    );
  });

  describe('a hostile or broken peer', () => {
    const reply = (p: Packet, over: Partial<Packet['header']>, payload?: Buffer): Buffer =>
      encodePacket(
        { ...p.header, type: MessageType.Reply, status: MessageStatus.Ok, ...over },
        payload ?? Buffer.alloc(0),
      );

    const cases: [string, (p: Packet) => Buffer | Buffer[], string, RegExp][] = [
      [
        'garbage bytes instead of a packet',
        () => Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'),
        'REPLY_TOO_LARGE',
        /exceeds the limit/,
      ],
      ['a length word of 4 GiB', () => Buffer.from('ffffffff', 'hex'), 'REPLY_TOO_LARGE', /exceeds the limit/],
      ['a length word of 3', () => Buffer.from('0000000300000000', 'hex'), 'OUT_OF_SYNC', /shorter than a header/],
      [
        'a truncated packet, then the connection closes',
        (p) => [reply(p, {}, Buffer.alloc(100)).subarray(0, 60)],
        'CHANNEL_GONE',
        /closed by libvirtd/,
      ],
      [
        'a reply naming another procedure',
        (p) => reply(p, { procedure: 999 }),
        'OUT_OF_SYNC',
        /names program 0x20008086 procedure 999/,
      ],
      [
        'a reply with status Continue',
        (p) => reply(p, { status: MessageStatus.Continue }),
        'OUT_OF_SYNC',
        /has status 2/,
      ],
      [
        'an error reply whose remote_error is cut short',
        (p) => reply(p, { status: MessageStatus.Error }, u32(1)),
        'OUT_OF_SYNC',
        /unreadable error reply/,
      ],
    ];
    for (const [title, bytes, code, message] of cases) {
      test(`${title}: the call fails with ${code}, nothing crashes`, async () => {
        const c = await start(
          (p, conn) => {
            const out = bytes(p);
            if (Array.isArray(out)) {
              for (const b of out) conn.write(b);
              setTimeout(() => conn.socket.end(), 20);
            } else conn.write(out);
          },
          { maxPacketBytes: 4096 },
        );
        const err = await call(c, 1, 'victim', 2000).catch((e: unknown) => e);
        assert.ok(err instanceof QuiesceError, String(err));
        assert.equal(err.code, code, err.message);
        assert.match(err.message, message);
      });
    }

    test('a framing error closes the connection: every call in flight fails with it, later ones too', async () => {
      let n = 0;
      const c = await start(
        (_p, conn) => {
          if (++n === 2) conn.write(Buffer.from('ffffffff', 'hex'));
        },
        { maxPacketBytes: 4096 },
      );
      const results = await Promise.allSettled([call(c, 1), call(c, 2)]);
      for (const r of results)
        assert.equal(r.status === 'rejected' && (r.reason as QuiesceError).code, 'REPLY_TOO_LARGE');
      assert.equal(c.closed, true);
      await assert.rejects(call(c, 3), (e: unknown) => (e as QuiesceError).code === 'REPLY_TOO_LARGE');
    });

    test('replies with unknown serials, streams and calls from the server are counted and ignored', async () => {
      const c = await start((p, conn) => {
        conn.write(reply(p, { serial: p.header.serial + 1000 }));
        conn.write(reply(p, { type: MessageType.Stream }));
        conn.write(reply(p, { type: MessageType.Call }));
        conn.write(reply(p, { type: 77 }));
        conn.reply(p, u32(42));
      });
      assert.equal((await call(c, 1)).readUInt32BE(0), 42);
      assert.deepEqual(c.stats, { pingsAnswered: 0, strayReplies: 1, ignoredPackets: 3 });
    });

    test('a packet over the limit arriving in pieces is refused at its length word, before its body is buffered', async () => {
      const c = await start(
        (_p, conn) => {
          const b = Buffer.alloc(8);
          b.writeUInt32BE(4 + 1024 * 1024);
          conn.write(b);
          conn.write(Buffer.alloc(64 * 1024));
        },
        { maxPacketBytes: 64 * 1024 },
      );
      await assert.rejects(call(c, 1), (e: unknown) => (e as QuiesceError).code === 'REPLY_TOO_LARGE');
    });
  });
});
