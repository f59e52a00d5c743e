// The RPC client against a real libvirtd managing a booted TCG guest running qemu-ga (test/helpers/libvirt.ts):
// the agent through qemu-agent-command, fsfreeze/fsthaw of the guest's own /data only, then a disk-only
// snapshot, checkpoints, a push backup job and an active block commit, each checked against virsh or the
// events libvirt sends. Last, guest-ping's round trip on one connection vs a virsh process per call.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LibvirtError, VirErr } from '../../../src/libvirt/error.js';
import {
  BlockCommitFlags,
  BlockJobAbortFlags,
  BlockJobStatus,
  BlockJobType,
  DomainEventId,
  JobStatsFlags,
  JobType,
  SnapshotCreateFlags,
  SnapshotDeleteFlags,
} from '../../../src/libvirt/protocol.js';
import { LibvirtConnection } from '../../../src/libvirt/remote.js';
import type { DomainRef, SnapshotRef } from '../../../src/libvirt/types.js';
import { haveQemuGa } from '../../helpers/agents.js';
import { defineGuest, ensureLibvirtd, libvirtUnavailable, virsh, type LibvirtGuest } from '../../helpers/libvirt.js';
import { GUEST_DATA_MOUNT } from '../../helpers/vm/qemu.js';

const unavailable = libvirtUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');
const PING = '{"execute":"guest-ping"}';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const diskXml = (xml: string): string => /<disk type='file' device='disk'>[\s\S]*?<\/disk>/.exec(xml)?.[0] ?? '';

describe('libvirt RPC client against a booted guest running qemu-ga', { skip: unavailable, timeout: 400_000 }, () => {
  let guest: LibvirtGuest | undefined;
  let conn: LibvirtConnection | undefined;
  let dom: DomainRef;
  let snapshot: SnapshotRef | undefined;

  before(async () => {
    await ensureLibvirtd();
    guest = await defineGuest({ agent: 'qemu-ga' });
    conn = await LibvirtConnection.open({ callTimeoutMs: 60_000 });
    dom = await conn.lookupDomain(guest.name);
  });

  after(async () => {
    // A test that failed while /data was frozen must not leave it so (this thaws inside the VM only).
    if (conn && !conn.closed) await conn.fsthaw(dom).catch(() => undefined);
    await conn?.close();
    const name = guest?.name;
    await guest?.destroy();
    if (name)
      assert.ok(!(await virsh(['list', '--all', '--name'])).split('\n').includes(name), `domain ${name} is gone`);
  });

  test('lookup and XML agree with virsh (id, dumpxml)', async () => {
    const g = guest!;
    assert.equal(String(dom.id), (await virsh(['domid', g.name])).trim());
    assert.equal(`${await conn!.getXmlDesc(dom)}\n`, await virsh(['dumpxml', g.name]));
  });

  test('qemu-agent-command answers guest-ping and guest-info as virsh qemu-agent-command does', async () => {
    const g = guest!;
    assert.deepEqual(JSON.parse((await conn!.agentCommand(dom, PING))!), await g.agentCommand('guest-ping'));
    const ours = JSON.parse((await conn!.agentCommand(dom, '{"execute":"guest-info"}'))!) as { return: unknown };
    const theirs = (await g.agentCommand('guest-info')) as { return: unknown };
    assert.deepEqual(ours, theirs);
  });

  test("an agent error is a LibvirtError carrying the agent's message", async () => {
    const cmd = '{"execute":"guest-file-open","arguments":{"path":"/nonexistent/x"}}';
    const err = await conn!.agentCommand(dom, cmd).catch((e: unknown) => e);
    assert.ok(err instanceof LibvirtError, String(err));
    assert.equal(err.code, 'AGENT_ERROR');
    assert.match(
      err.libvirtMessage,
      /unable to execute QEMU agent command 'guest-file-open': failed to open file '\/nonexistent\/x' \(mode: 'r'\): No such file or directory/,
    );
    const viaVirsh = await virsh(['qemu-agent-command', guest!.name, cmd]).catch((e: Error) => e.message);
    assert.ok(viaVirsh.includes(err.libvirtMessage), `virsh says the same: ${viaVirsh}`);
  });

  test("domain-fsfreeze of the guest's /data only, then domain-fsthaw", async () => {
    const status = async (): Promise<unknown> =>
      (JSON.parse((await conn!.agentCommand(dom, '{"execute":"guest-fsfreeze-status"}'))!) as { return: unknown })
        .return;
    assert.equal(await conn!.fsfreeze(dom, [GUEST_DATA_MOUNT]), 1);
    try {
      assert.equal(await status(), 'frozen');
    } finally {
      assert.equal(await conn!.fsthaw(dom), 1);
    }
    assert.equal(await status(), 'thawed');
  });

  test('domain-snapshot-create-xml: a disk-only external snapshot puts a qcow2 overlay on vda', async () => {
    const g = guest!;
    const overlay = join(g.dir, 'overlay.qcow2');
    const xml =
      `<domainsnapshot><name>s1</name><disks><disk name='vda' snapshot='external'>` +
      `<source file='${overlay}'/><driver type='qcow2'/></disk></disks></domainsnapshot>`;
    snapshot = await conn!.snapshotCreateXml(dom, xml, SnapshotCreateFlags.DISK_ONLY | SnapshotCreateFlags.ATOMIC);
    assert.equal(snapshot.name, 's1');
    assert.equal(snapshot.domain.name, g.name);
    assert.equal(`${await conn!.snapshotGetXmlDesc(snapshot)}\n`, await virsh(['snapshot-dumpxml', g.name, 's1']));
    const disk = diskXml(await conn!.getXmlDesc(dom));
    assert.match(disk, new RegExp(`<source file='${overlay}'`));
    assert.match(disk, /<backingStore type='file'[\s\S]*data\.img/);
    assert.ok(existsSync(overlay));
  });

  test('checkpoints, then a push backup job with a checkpoint: job-completed event and completed job stats', async () => {
    const g = guest!;
    const c = conn!;
    const cp1 = await c.checkpointCreateXml(
      dom,
      `<domaincheckpoint><name>cp1</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>`,
    );
    assert.equal(cp1.name, 'cp1');
    assert.equal(`${await c.checkpointGetXmlDesc(cp1)}\n`, await virsh(['checkpoint-dumpxml', g.name, 'cp1']));

    const cb = await c.registerDomainEvent(DomainEventId.JOB_COMPLETED, dom);
    const target = join(g.dir, 'backup.qcow2');
    const since = c.lastEventSeq();
    await c.backupBegin(
      dom,
      `<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='${target}'/>` +
        `<driver type='qcow2'/></disk></disks></domainbackup>`,
      `<domaincheckpoint><name>cp2</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>`,
    );
    const done = await c.waitForDomainEvent((e) => e.kind === 'job-completed' && e.callbackId === cb, {
      since,
      timeoutMs: 120_000,
      what: 'job-completed event',
    });
    assert.ok(done.kind === 'job-completed');
    assert.equal(
      done.stats['success'],
      true,
      JSON.stringify(done.stats, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
    );
    assert.equal(done.stats['disk_total'], done.stats['disk_processed']);
    const stats = await c.getJobStats(dom, JobStatsFlags.COMPLETED);
    assert.equal(stats.type, JobType.COMPLETED);
    assert.equal(stats.stats['success'], true);
    assert.equal((await c.getJobInfo(dom)).type, JobType.NONE, 'no job runs any more');
    // With no job left, domain-abort-job is refused: a typed error, not a hang.
    const abort = await c.abortJob(dom).catch((e: unknown) => e);
    assert.ok(abort instanceof LibvirtError && abort.virCode === VirErr.OPERATION_INVALID, String(abort));
    assert.match(abort.libvirtMessage, /no job is active/);
    assert.ok(existsSync(target));
    await c.deregisterDomainEvent(cb);

    const names = (await c.listAllCheckpoints(dom)).map((x) => x.name).sort();
    assert.deepEqual(names, ['cp1', 'cp2']);
    assert.equal((await c.checkpointLookupByName(dom, 'cp2')).name, 'cp2');
    // Children first is not required for checkpoints: each delete merges its bitmap into the parent's.
    for (const cp of await c.listAllCheckpoints(dom)) await c.checkpointDelete(cp);
    assert.deepEqual(await c.listAllCheckpoints(dom), []);
  });

  test('domain-block-commit of the active layer: READY event, pivot, COMPLETED event, vda back on data.img', async () => {
    const c = conn!;
    const cb = await c.registerDomainEvent(DomainEventId.BLOCK_JOB_2, dom);
    try {
      let since = c.lastEventSeq();
      await c.blockCommit(dom, 'vda', { flags: BlockCommitFlags.ACTIVE });
      const ready = await c.waitForDomainEvent(
        (e) => e.kind === 'block-job' && e.callbackId === cb && e.status === BlockJobStatus.READY,
        { since, timeoutMs: 120_000, what: 'block job READY event' },
      );
      assert.ok(ready.kind === 'block-job' && ready.disk === 'vda' && ready.type === BlockJobType.ACTIVE_COMMIT);
      const info = await c.getBlockJobInfo(dom, 'vda');
      assert.equal(info.found, true);
      assert.equal(info.cur, info.end);

      since = c.lastEventSeq();
      await c.blockJobAbort(dom, 'vda', BlockJobAbortFlags.PIVOT);
      await c.waitForDomainEvent(
        (e) => e.kind === 'block-job' && e.callbackId === cb && e.status === BlockJobStatus.COMPLETED,
        { since, timeoutMs: 120_000, what: 'block job COMPLETED event' },
      );
      const disk = diskXml(await c.getXmlDesc(dom));
      assert.match(disk, /<source file='[^']*data\.img'/);
      assert.doesNotMatch(disk, /overlay\.qcow2/);
      // The overlay is out of the chain: only the snapshot's metadata is left to drop.
      if (snapshot) await c.snapshotDelete(snapshot, SnapshotDeleteFlags.METADATA_ONLY);
      assert.equal((await virsh(['snapshot-list', guest!.name, '--name'])).trim(), '');
    } finally {
      await c.deregisterDomainEvent(cb);
    }
  });

  test('guest-ping round trip: one RPC connection vs a virsh process per call (median of 20)', async (t) => {
    const g = guest!;
    const c = conn!;
    const rpc: number[] = [];
    const proc: number[] = [];
    for (let i = 0; i < 20; i++) {
      let t0 = performance.now();
      assert.equal(await c.agentCommand(dom, PING), '{"return":{}}');
      rpc.push(performance.now() - t0);
      t0 = performance.now();
      await virsh(['qemu-agent-command', g.name, PING]);
      proc.push(performance.now() - t0);
    }
    const a = median(rpc);
    const b = median(proc);
    t.diagnostic(`guest-ping median of 20: RPC client ${a.toFixed(2)} ms, virsh qemu-agent-command ${b.toFixed(2)} ms`);
    assert.ok(a < b, `one connection (${a} ms) beats a process per call (${b} ms)`);
  });
});
