// The RPC client against a real libvirtd, no guest running: open/close, versions compared with virsh, typed
// errors with libvirt's own message, a persistent domain that is defined and undefined but never started
// (its XML compared with virsh dumpxml, its lifecycle events), concurrency on one connection, keepalive.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { LibvirtError, VirErr } from '../../../src/libvirt/error.js';
import type { DomainEvent } from '../../../src/libvirt/events.js';
import { DomainEventId, DomainState, DomainXmlFlags, LifecycleEvent } from '../../../src/libvirt/protocol.js';
import { LibvirtConnection } from '../../../src/libvirt/remote.js';
import { uuidString } from '../../../src/libvirt/types.js';
import { ensureLibvirtd, libvirtUnavailable, virsh } from '../../helpers/libvirt.js';
import { QEMU } from '../../helpers/vm/qemu.js';

const unavailable = libvirtUnavailable();
// The helper's reaper undefines `quiesce-vm-<pid>-<n>` domains whose process is gone.
const NAME = `quiesce-vm-${process.pid}-901`;
const TRANSIENT = `quiesce-vm-${process.pid}-902`;

/** libvirt's version number (major*1e6 + minor*1e3 + micro) as virsh prints it. */
const dotted = (v: number): string => `${Math.floor(v / 1e6)}.${Math.floor(v / 1e3) % 1000}.${v % 1000}`;

const tinyDomainXml = (name: string): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>${QEMU}</emulator></devices>
</domain>
`;

describe('libvirt RPC client against a real libvirtd (no guest)', { skip: unavailable, timeout: 120_000 }, () => {
  let conn: LibvirtConnection;

  before(async () => {
    await ensureLibvirtd();
    conn = await LibvirtConnection.open({ callTimeoutMs: 30_000 });
  });

  after(async () => {
    // Whatever a failed test left: the domain is never started, so undefine is all it takes.
    await virsh(['undefine', NAME]).catch(() => undefined);
    await virsh(['destroy', TRANSIENT]).catch(() => undefined);
    await conn?.close();
  });

  test('versions, driver type and hostname are the ones virsh reports', async () => {
    const text = await virsh(['version']);
    const lib = await conn.getLibVersion();
    const hv = await conn.getVersion();
    assert.match(text, new RegExp(`Using library: libvirt ${dotted(lib).replace(/\./g, '\\.')}\\b`));
    assert.match(
      text,
      new RegExp(`Running hypervisor: ${await conn.getType()} ${dotted(hv).replace(/\./g, '\\.')}\\b`),
    );
    assert.equal(await conn.getHostname(), (await virsh(['hostname'])).trim());
  });

  test("a missing domain is a LibvirtError with libvirt's code and message", async () => {
    const err = await conn.lookupDomain('quiesce-no-such-domain').catch((e: unknown) => e);
    assert.ok(err instanceof LibvirtError, String(err));
    assert.equal(err.virCode, VirErr.NO_DOMAIN);
    assert.equal(err.code, 'AGENT_ERROR');
    assert.equal(err.libvirtMessage, "Domain not found: no domain with matching name 'quiesce-no-such-domain'");
    // The connection is still good after an error reply.
    assert.ok((await conn.getVersion()) > 0);
  });

  test('define → lookup → XML (same as virsh dumpxml) → state → undefine, with lifecycle events', async () => {
    const events: DomainEvent[] = [];
    const off = conn.onDomainEvent((e) => {
      if (e.kind === 'lifecycle' && e.domain.name === NAME) events.push(e);
    });
    const cb = await conn.registerDomainEvent(DomainEventId.LIFECYCLE);
    try {
      const defined = await conn.defineXml(tinyDomainXml(NAME));
      assert.equal(defined.name, NAME);
      assert.equal(defined.id, -1, 'never started');

      const dom = await conn.lookupDomain(NAME);
      assert.equal(uuidString(dom.uuid), (await virsh(['domuuid', NAME])).trim());
      const xml = await conn.getXmlDesc(dom);
      // virsh prints one newline after the XML libvirt returns.
      assert.equal(`${xml}\n`, await virsh(['dumpxml', NAME]));
      const inactive = await conn.getXmlDesc(dom, DomainXmlFlags.INACTIVE);
      assert.equal(`${inactive}\n`, await virsh(['dumpxml', '--inactive', NAME]));
      assert.match(xml, new RegExp(`<uuid>${uuidString(dom.uuid)}</uuid>`));
      assert.equal((await conn.getState(dom)).state, DomainState.SHUTOFF);
      assert.deepEqual(await conn.listAllCheckpoints(dom), []);

      await conn.undefine(dom);
      await assert.rejects(
        conn.lookupDomain(NAME),
        (e: unknown) => e instanceof LibvirtError && e.virCode === VirErr.NO_DOMAIN,
      );
      for (let i = 0; i < 200 && events.length < 2; i++) await sleep(10);
      assert.deepEqual(
        events.map((e) => e.kind === 'lifecycle' && [e.callbackId, e.event]),
        [
          [cb, LifecycleEvent.DEFINED],
          [cb, LifecycleEvent.UNDEFINED],
        ],
      );
    } finally {
      off();
      await conn.deregisterDomainEvent(cb);
    }
  });

  test('create-xml starts a transient domain (no disk: it idles in the firmware), destroy ends it', async () => {
    const events: DomainEvent[] = [];
    const off = conn.onDomainEvent((e) => {
      if (e.kind === 'lifecycle' && e.domain.name === TRANSIENT) events.push(e);
    });
    const cb = await conn.registerDomainEvent(DomainEventId.LIFECYCLE);
    try {
      const dom = await conn.createXml(tinyDomainXml(TRANSIENT));
      assert.ok(dom.id > 0, `running, id ${dom.id}`);
      assert.equal((await conn.getState(dom)).state, DomainState.RUNNING);
      assert.equal((await virsh(['domstate', TRANSIENT])).trim(), 'running');
      // No job, no backup: both refusals come back typed.
      const abort = await conn.abortJobFlags(dom, 0).catch((e: unknown) => e);
      assert.ok(abort instanceof LibvirtError && abort.virCode === VirErr.OPERATION_INVALID, String(abort));
      const backup = await conn.backupGetXmlDesc(dom).catch((e: unknown) => e);
      assert.ok(backup instanceof LibvirtError && backup.virCode === VirErr.NO_DOMAIN_BACKUP, String(backup));
      await conn.destroy(dom);
      await assert.rejects(
        conn.lookupDomain(TRANSIENT),
        (e: unknown) => (e as LibvirtError).virCode === VirErr.NO_DOMAIN,
      );
      // libvirt also reports resumed (QEMU starts paused) and shutdown around these two.
      const kinds = (): number[] => events.map((e) => (e.kind === 'lifecycle' ? e.event : -1));
      for (let i = 0; i < 200 && !kinds().includes(LifecycleEvent.STOPPED); i++) await sleep(10);
      assert.ok(kinds().includes(LifecycleEvent.STARTED), `events ${kinds().join(',')}`);
      assert.equal(kinds().at(-1), LifecycleEvent.STOPPED, `events ${kinds().join(',')}`);
    } finally {
      off();
      await conn.deregisterDomainEvent(cb);
    }
  });

  test('many concurrent calls on one connection each get their own answer', async () => {
    const names = Array.from({ length: 40 }, (_, i) => `quiesce-missing-${i}`);
    const results = await Promise.all([
      ...names.map((n) =>
        conn.lookupDomain(n).then(
          () => 'found',
          (e: unknown) => (e as LibvirtError).libvirtMessage,
        ),
      ),
      conn.getLibVersion().then(String),
    ]);
    names.forEach((n, i) => assert.equal(results[i], `Domain not found: no domain with matching name '${n}'`));
    assert.equal(results.at(-1), String(await conn.getLibVersion()));
    assert.equal(conn.rpc.inFlight, 0);
  });

  test('the read-only socket opens read-only and refuses a define with a typed error', async () => {
    const ro = await LibvirtConnection.open({ socketPath: '/var/run/libvirt/libvirt-sock-ro', readOnly: true });
    try {
      assert.ok((await ro.getVersion()) > 0);
      const err = await ro.defineXml(tinyDomainXml(NAME)).catch((e: unknown) => e);
      assert.ok(err instanceof LibvirtError, String(err));
      assert.match(err.libvirtMessage, /read only/i);
    } finally {
      await ro.close();
    }
  });

  test('with keepalive asked for, libvirtd PINGs an idle connection and the client answers', async () => {
    const c = await LibvirtConnection.open();
    try {
      // libvirtd's default keepalive_interval is 5 s.
      for (let i = 0; i < 120 && c.rpc.stats.pingsAnswered === 0; i++) await sleep(100);
      assert.ok(c.rpc.stats.pingsAnswered >= 1, 'a PING arrived and was answered');
      assert.ok((await c.getVersion()) > 0, 'the connection is alive');
      assert.ok((await c.ping()) < 1000, 'and answers our own PING');
    } finally {
      await c.close();
    }
  });

  test('close() ends the connection; calls after it fail with CHANNEL_GONE', async () => {
    const c = await LibvirtConnection.open({ keepalive: false });
    await c.close();
    assert.equal(c.closed, true);
    await assert.rejects(c.getVersion(), (e: unknown) => (e as LibvirtError).code === 'CHANNEL_GONE');
  });
});
