// The typed procedure wrappers against a fake libvirtd: the open handshake, argument encoding checked byte
// by byte where it matters (agent command, fsfreeze list), reply decoding, and domain events.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { QuiesceError } from '../../../src/errors.js';
import { LibvirtError, VirErr } from '../../../src/libvirt/error.js';
import type { Packet } from '../../../src/libvirt/packet.js';
import {
  DomainEventId,
  DrvFeature,
  LifecycleEvent,
  QEMU_PROGRAM,
  QemuProc,
  REMOTE_PROGRAM,
  RemoteProc,
  TypedParamType,
} from '../../../src/libvirt/protocol.js';
import { LibvirtConnection } from '../../../src/libvirt/remote.js';
import { readDomain, uuidString, writeDomain, writeTypedParam, type DomainRef } from '../../../src/libvirt/types.js';
import { XdrReader, XdrWriter } from '../../../src/libvirt/xdr.js';
import { startFakeLibvirtd, type CallHandler, type FakeLibvirtd } from '../../helpers/fake-libvirtd.js';

const DOM: DomainRef = { name: 'vm1', uuid: Buffer.from('00112233445566778899aabbccddeeff', 'hex'), id: 3 };
const domBytes = (d: DomainRef = DOM): Buffer => {
  const w = new XdrWriter();
  writeDomain(w, d);
  return w.toBuffer();
};
const proc = (p: Packet): number => p.header.procedure;

describe('libvirt remote procedures (against a fake libvirtd)', () => {
  let fake: FakeLibvirtd | undefined;
  let conn: LibvirtConnection | undefined;
  afterEach(async () => {
    await conn?.close();
    conn = undefined;
    await fake?.close();
    fake = undefined;
  });

  const open = async (handler: CallHandler = () => undefined) => {
    fake = await startFakeLibvirtd(handler);
    conn = await LibvirtConnection.open({ socketPath: fake.path, callTimeoutMs: 2000 });
    return conn;
  };

  test('open: auth-list, the keepalive feature, then connect-open of qemu:///system read-write', async () => {
    const c = await open();
    const sent = fake!.connections[0]!.received;
    assert.deepEqual(sent.map(proc), [
      RemoteProc.AUTH_LIST,
      RemoteProc.CONNECT_SUPPORTS_FEATURE,
      RemoteProc.CONNECT_OPEN,
    ]);
    assert.equal(new XdrReader(sent[1]!.payload).int(), DrvFeature.PROGRAM_KEEPALIVE);
    const r = new XdrReader(sent[2]!.payload);
    assert.equal(
      r.optional((x) => x.string()),
      'qemu:///system',
    );
    assert.equal(r.uint(), 0, 'flags: read-write');
    r.end();
    await c.close();
    assert.equal(sent.at(-1)!.header.procedure, RemoteProc.CONNECT_CLOSE);
    assert.equal(c.closed, true);
    await c.close(); // twice is fine
  });

  test('open answers polkit with auth-polkit, and refuses SASL with CONNECT_FAILED', async () => {
    let types = [2];
    fake = await startFakeLibvirtd(
      (p, c) => {
        if (proc(p) === RemoteProc.AUTH_LIST) c.reply(p, new XdrWriter().array(types, (w, v) => w.int(v)).toBuffer());
        else if (proc(p) === RemoteProc.AUTH_POLKIT) c.reply(p, new XdrWriter().int(1).toBuffer());
        else
          c.reply(p, proc(p) === RemoteProc.CONNECT_SUPPORTS_FEATURE ? new XdrWriter().int(1).toBuffer() : undefined);
      },
      { handshake: false },
    );
    conn = await LibvirtConnection.open({ socketPath: fake.path, keepalive: false, readOnly: true });
    assert.deepEqual(fake.connections[0]!.received.map(proc), [
      RemoteProc.AUTH_LIST,
      RemoteProc.AUTH_POLKIT,
      RemoteProc.CONNECT_OPEN,
    ]);
    const r = new XdrReader(fake.connections[0]!.received[2]!.payload);
    r.optional((x) => x.string());
    assert.equal(r.uint(), 1, 'flags: VIR_CONNECT_RO');
    types = [1];
    await assert.rejects(
      LibvirtConnection.open({ socketPath: fake.path }),
      (e: unknown) => e instanceof QuiesceError && e.code === 'CONNECT_FAILED' && /SASL/.test(e.message),
    );
  });

  test("a refused connect-open is CONNECT_FAILED with libvirt's error as the cause, and the socket is closed", async () => {
    fake = await startFakeLibvirtd(
      (p, c) => {
        if (proc(p) === RemoteProc.CONNECT_OPEN)
          c.replyError(p, { code: 38, message: 'no connection driver available' });
        else if (proc(p) === RemoteProc.AUTH_LIST) c.reply(p, new XdrWriter().uint(0).toBuffer());
        else c.reply(p, new XdrWriter().int(1).toBuffer());
      },
      { handshake: false },
    );
    const err = await LibvirtConnection.open({ socketPath: fake.path, uri: 'bogus:///x' }).catch((e: unknown) => e);
    assert.ok(err instanceof QuiesceError && err.code === 'CONNECT_FAILED', String(err));
    assert.match(err.message, /cannot open bogus:\/\/\/x: .*no connection driver available/);
    assert.ok(err.cause instanceof LibvirtError && err.cause.virCode === 38);
    const server = fake.connections[0]!.socket;
    for (let i = 0; i < 100 && !server.closed; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(server.closed, true);
  });

  test('lookupDomain sends the name and decodes name, uuid and id', async () => {
    const c = await open((p, cn) => {
      if (proc(p) !== RemoteProc.DOMAIN_LOOKUP_BY_NAME) return;
      const name = new XdrReader(p.payload).string();
      if (name === 'vm1') cn.reply(p, domBytes());
      else
        cn.replyError(p, {
          code: VirErr.NO_DOMAIN,
          message: `Domain not found: no domain with matching name '${name}'`,
        });
    });
    const d = await c.lookupDomain('vm1');
    assert.equal(d.name, 'vm1');
    assert.equal(uuidString(d.uuid), '00112233-4455-6677-8899-aabbccddeeff');
    assert.equal(d.id, 3);
    await assert.rejects(
      c.lookupDomain('nope'),
      (e: unknown) => e instanceof LibvirtError && e.virCode === VirErr.NO_DOMAIN,
    );
  });

  test('agentCommand goes to the QEMU program with domain, JSON, timeout and flags, and returns the reply text', async () => {
    let args: { dom: DomainRef; cmd: string; timeout: number; flags: number } | undefined;
    const c = await open((p, cn) => {
      if (p.header.program !== QEMU_PROGRAM || proc(p) !== QemuProc.DOMAIN_AGENT_COMMAND) return;
      const r = new XdrReader(p.payload);
      args = { dom: readDomain(r), cmd: r.string(), timeout: r.int(), flags: r.uint() };
      r.end();
      cn.reply(p, new XdrWriter().optional('{"return":{}}', (w, v) => w.string(v)).toBuffer());
    });
    const out = await c.agentCommand(DOM, '{"execute":"guest-ping"}', { agentTimeoutSec: 7 });
    assert.equal(out, '{"return":{}}');
    assert.deepEqual(args, { dom: DOM, cmd: '{"execute":"guest-ping"}', timeout: 7, flags: 0 });
  });

  test('fsfreeze sends its mountpoint list; fsthaw defaults to an empty one; both return the count', async () => {
    const lists: string[][] = [];
    const c = await open((p, cn) => {
      if (proc(p) !== RemoteProc.DOMAIN_FSFREEZE && proc(p) !== RemoteProc.DOMAIN_FSTHAW) return;
      const r = new XdrReader(p.payload);
      readDomain(r);
      const list = r.array((x) => x.string());
      r.uint();
      r.end();
      lists.push(list);
      cn.reply(p, new XdrWriter().int(list.length || 1).toBuffer());
    });
    assert.equal(await c.fsfreeze(DOM, ['/data', '/srv']), 2);
    assert.equal(await c.fsthaw(DOM), 1);
    assert.deepEqual(lists, [['/data', '/srv'], []]);
    // More than REMOTE_DOMAIN_FSFREEZE_MOUNTPOINTS_MAX never leaves the client.
    const tooMany = Array.from({ length: 257 }, () => '/x');
    await assert.rejects(c.fsfreeze(DOM, tooMany), RangeError);
    assert.equal(lists.length, 2);
  });

  test('blockJobSetSpeed sends domain, disk, a 64-bit bandwidth and flags, and takes an empty reply', async () => {
    const sent: { dom: DomainRef; disk: string; bandwidth: bigint; flags: number }[] = [];
    const c = await open((p, cn) => {
      if (proc(p) !== RemoteProc.DOMAIN_BLOCK_JOB_SET_SPEED) return;
      const r = new XdrReader(p.payload);
      sent.push({ dom: readDomain(r), disk: r.string(), bandwidth: r.uhyper(), flags: r.uint() });
      r.end();
      cn.reply(p, Buffer.alloc(0));
    });
    await c.blockJobSetSpeed(DOM, 'vda', 1n);
    await c.blockJobSetSpeed(DOM, 'vdb', 1n << 40n, 1);
    assert.deepEqual(sent, [
      { dom: DOM, disk: 'vda', bandwidth: 1n, flags: 0 },
      { dom: DOM, disk: 'vdb', bandwidth: 1n << 40n, flags: 1 },
    ]);
  });

  test('a reply with bytes left over after its type is OUT_OF_SYNC', async () => {
    const c = await open((p, cn) => {
      if (proc(p) === RemoteProc.CONNECT_GET_VERSION) cn.reply(p, new XdrWriter().uhyper(1n).int(0).toBuffer());
    });
    await assert.rejects(
      c.getVersion(),
      (e: unknown) =>
        e instanceof QuiesceError &&
        e.code === 'OUT_OF_SYNC' &&
        /undecodable reply to connect-get-version: .*4 unread bytes/.test(e.message),
    );
  });

  test('job stats decode every typed-parameter type; 64-bit ones stay bigint', async () => {
    const c = await open((p, cn) => {
      if (proc(p) !== RemoteProc.DOMAIN_GET_JOB_STATS) return;
      const w = new XdrWriter().int(3);
      const params = [
        { field: 'operation', type: TypedParamType.INT, value: 10 },
        { field: 'time_elapsed', type: TypedParamType.ULLONG, value: 2n ** 60n },
        { field: 'disk_total', type: TypedParamType.LLONG, value: -1n },
        { field: 'ui', type: TypedParamType.UINT, value: 4_000_000_000 },
        { field: 'ratio', type: TypedParamType.DOUBLE, value: 0.5 },
        { field: 'success', type: TypedParamType.BOOLEAN, value: true },
        { field: 'errmsg', type: TypedParamType.STRING, value: 'none' },
      ];
      w.array(params, writeTypedParam);
      cn.reply(p, w.toBuffer());
    });
    const s = await c.getJobStats(DOM, 1);
    assert.equal(s.type, 3);
    assert.deepEqual(s.stats, {
      operation: 10,
      time_elapsed: 2n ** 60n,
      disk_total: -1n,
      ui: 4_000_000_000,
      ratio: 0.5,
      success: true,
      errmsg: 'none',
    });
  });

  test('domain events are decoded and delivered; an undecodable one is counted and dropped', async () => {
    const c = await open((p, cn) => {
      if (proc(p) === RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)
        cn.reply(p, new XdrWriter().int(7).toBuffer());
    });
    const id = await c.registerDomainEvent(DomainEventId.JOB_COMPLETED, DOM);
    assert.equal(id, 7);
    const reg = new XdrReader(fake!.connections[0]!.received.at(-1)!.payload);
    assert.equal(reg.int(), DomainEventId.JOB_COMPLETED);
    assert.deepEqual(
      reg.optional((x) => readDomain(x)),
      DOM,
    );

    const seen: unknown[] = [];
    c.onDomainEvent((e) => seen.push(e.kind === 'other' ? e : { kind: e.kind, cb: e.callbackId, dom: e.domain.name }));
    const fc = fake!.connections[0]!;
    const lifecycle = new XdrWriter().int(7);
    writeDomain(lifecycle, DOM);
    lifecycle.int(LifecycleEvent.DEFINED).int(0);
    const job = new XdrWriter().int(7);
    writeDomain(job, DOM);
    job.array([{ field: 'success', type: TypedParamType.BOOLEAN, value: true }], writeTypedParam);
    const block = new XdrWriter().int(7);
    writeDomain(block, DOM);
    block.string('vda').int(5).int(0);
    const completed = c.waitForDomainEvent((e) => e.kind === 'job-completed', { timeoutMs: 2000 });
    fc.message(REMOTE_PROGRAM, RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, lifecycle.toBuffer());
    fc.message(REMOTE_PROGRAM, RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, Buffer.from('0000'));
    fc.message(REMOTE_PROGRAM, 9999, Buffer.alloc(0));
    fc.message(REMOTE_PROGRAM, RemoteProc.DOMAIN_EVENT_BLOCK_JOB_2, block.toBuffer());
    fc.message(REMOTE_PROGRAM, RemoteProc.DOMAIN_EVENT_CALLBACK_JOB_COMPLETED, job.toBuffer());
    const e = await completed;
    assert.equal(e.kind === 'job-completed' && e.stats['success'], true);
    assert.deepEqual(seen, [
      { kind: 'lifecycle', cb: 7, dom: 'vm1' },
      { kind: 'other', procedure: 9999 },
      { kind: 'block-job', cb: 7, dom: 'vm1' },
      { kind: 'job-completed', cb: 7, dom: 'vm1' },
    ]);
    assert.equal(c.undecodableEvents, 1);
  });

  test('waitForDomainEvent({ since }) finds an event that arrived before the wait began', async () => {
    const c = await open();
    const mark = c.lastEventSeq();
    const w = new XdrWriter().int(1);
    writeDomain(w, DOM);
    w.string('vda').int(4).int(3);
    fake!.connections[0]!.message(REMOTE_PROGRAM, RemoteProc.DOMAIN_EVENT_BLOCK_JOB_2, w.toBuffer());
    for (let i = 0; i < 100 && c.lastEventSeq() === mark; i++) await new Promise((r) => setTimeout(r, 5));
    const e = await c.waitForDomainEvent((x) => x.kind === 'block-job' && x.status === 3, {
      since: mark,
      timeoutMs: 100,
    });
    assert.equal(e.kind === 'block-job' && e.disk, 'vda');
    // Without `since`, only events from now on count.
    await assert.rejects(
      c.waitForDomainEvent((x) => x.kind === 'block-job', { timeoutMs: 30 }),
      /no domain event/,
    );
  });

  test('waitForDomainEvent times out with TIMEOUT, and fails with the connection when it closes', async () => {
    const c = await open();
    await assert.rejects(
      c.waitForDomainEvent(() => true, { timeoutMs: 30, what: 'job-completed event' }),
      (e: unknown) =>
        e instanceof QuiesceError && e.code === 'TIMEOUT' && /no job-completed event within 30 ms/.test(e.message),
    );
    const waiting = c.waitForDomainEvent(() => true, { timeoutMs: 5000 });
    c.rpc.close();
    await assert.rejects(waiting, (e: unknown) => (e as QuiesceError).code === 'CHANNEL_GONE');
  });
});
