// Prune of a libvirt guest's repository deletes the checkpoints of pruned backups from the domain (one by
// one, newest first, never CHILDREN, never a kept point's), unlists those gone, and when libvirt cannot be
// reached removes the files all the same and leaves the names listed for the next backup, with a warning.
// Against test/helpers/fake-libvirtd.ts.
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeepRules } from '../../../../src/config/types.js';
import { VirErr } from '../../../../src/libvirt/error.js';
import type { Packet } from '../../../../src/libvirt/packet.js';
import { libvirtPool } from '../../../../src/libvirt/pool.js';
import { RemoteProc } from '../../../../src/libvirt/protocol.js';
import { readDomain, readString, writeCheckpoint, writeDomain } from '../../../../src/libvirt/types.js';
import { XdrReader, XdrWriter } from '../../../../src/libvirt/xdr.js';
import { captureLogger } from '../../../../src/log/logger.js';
import { bitmapName, guestDir, STALE_BITMAPS } from '../../../../src/repository/layout.js';
import type { RepositoryPrune } from '../../../../src/repository/prune.js';
import { formatPrune, prune, type PlannedPrune } from '../../../../src/workflow/prune.js';
import { startFakeLibvirtd, type FakeConn, type FakeLibvirtd } from '../../../helpers/fake-libvirtd.js';
import { testBackupId, writeBackup, type BackupSpec } from '../../../helpers/repository.js';

const DOMAIN = { name: 'web-dom', uuid: Buffer.alloc(16, 7), id: 3 };
const rules = (r: Partial<KeepRules>): KeepRules => ({
  keepLast: 0,
  keepDaily: 0,
  keepWeekly: 0,
  keepMonthly: 0,
  ...r,
});

/** A libvirtd holding `names` as the domain's checkpoints; records each delete (name, flags). */
async function fakeWith(
  names: string[],
  o: { readonly refuse?: string } = {},
): Promise<{ fake: FakeLibvirtd; have: Set<string>; deletes: { name: string; flags: number }[] }> {
  const have = new Set(names);
  const deletes: { name: string; flags: number }[] = [];
  const noCp = (call: Packet, c: FakeConn, name: string): void =>
    c.replyError(call, { code: VirErr.NO_DOMAIN_CHECKPOINT, domain: 70, message: `no checkpoint '${name}'` });
  const fake = await startFakeLibvirtd((call, c) => {
    const r = new XdrReader(call.payload);
    switch (call.header.procedure) {
      case RemoteProc.DOMAIN_LOOKUP_BY_NAME: {
        const name = readString(r);
        if (name !== DOMAIN.name)
          return c.replyError(call, { code: VirErr.NO_DOMAIN, message: `Domain not found: '${name}'` });
        const w = new XdrWriter();
        writeDomain(w, DOMAIN);
        return c.reply(call, w.toBuffer());
      }
      case RemoteProc.DOMAIN_LIST_ALL_CHECKPOINTS: {
        const list = [...have].map((name) => ({ name, domain: DOMAIN }));
        return c.reply(call, new XdrWriter().array(list, writeCheckpoint).int(list.length).toBuffer());
      }
      case RemoteProc.DOMAIN_CHECKPOINT_LOOKUP_BY_NAME: {
        readDomain(r);
        const name = readString(r);
        if (!have.has(name)) return noCp(call, c, name);
        const w = new XdrWriter();
        writeCheckpoint(w, { name, domain: DOMAIN });
        return c.reply(call, w.toBuffer());
      }
      case RemoteProc.DOMAIN_CHECKPOINT_DELETE: {
        const name = readString(r);
        readDomain(r);
        const flags = r.uint();
        if (name === o.refuse)
          return c.replyError(call, { code: 55, message: 'Requested operation is not valid: checkpoint in use' });
        if (!have.delete(name)) return noCp(call, c, name);
        deletes.push({ name, flags });
        return c.reply(call);
      }
      default:
        return c.replyError(call, { code: 3, message: `this fake does not do procedure ${call.header.procedure}` });
    }
  });
  return { fake, have, deletes };
}

describe('prune of a libvirt repository deletes the checkpoints of pruned backups', () => {
  let dir: string;
  let repo: string;
  let ids: string[];
  const stale = (): string[] => {
    const f = join(guestDir(repo, 'web'), STALE_BITMAPS);
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as string[]) : [];
  };
  const planned = (socket: string, r: Partial<KeepRules> = { keepLast: 2 }): PlannedPrune => ({
    ...rules(r),
    dir: undefined,
    match: undefined,
    repository: repo,
    checkpoints: {
      uri: `qemu:///system?socket=${socket}`,
      domain: DOMAIN.name,
      connectTimeoutMs: 2000,
      commandTimeoutMs: 2000,
    },
  });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'prune-libvirt-'));
    repo = join(dir, 'repo');
    // Chain 1: a full and two incrementals; chain 2: a full and an incremental (the base).
    ids = [0, 1, 2, 3, 4].map((i) => testBackupId(new Date(Date.UTC(2026, 10, 20 + i, 2)), i));
    const specs: BackupSpec[] = [
      { guest: 'web', id: ids[0]!, level: 'full', chain: ids[0]!, parent: null },
      { guest: 'web', id: ids[1]!, level: 'incremental', chain: ids[0]!, parent: ids[0]! },
      { guest: 'web', id: ids[2]!, level: 'incremental', chain: ids[0]!, parent: ids[1]! },
      { guest: 'web', id: ids[3]!, level: 'full', chain: ids[3]!, parent: null },
      { guest: 'web', id: ids[4]!, level: 'incremental', chain: ids[3]!, parent: ids[3]! },
    ];
    for (const s of specs) writeBackup(repo, s);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  after(() => libvirtPool.closeAll());

  test('deletes the pruned backups’ checkpoints libvirt still has, newest first and one by one; the base’s and others’ stay', async () => {
    const names = ids.map(bitmapName);
    // Left over: chain 1's two incrementals' (deletes that failed back then); the base's; someone else's.
    const { fake, have, deletes } = await fakeWith([names[1]!, names[2]!, names[4]!, 'nightly-other']);
    try {
      const log = captureLogger();
      const r = (await prune('web', planned(fake.path), { log, dryRun: false })) as RepositoryPrune;
      assert.deepEqual(
        r.remove.map((p) => p.id),
        [ids[2], ids[1], ids[0]],
      );
      assert.deepEqual(deletes, [
        { name: names[2], flags: 0 },
        { name: names[1], flags: 0 },
      ]);
      assert.deepEqual([...have].sort(), [names[4], 'nightly-other'].sort());
      assert.deepEqual(r.checkpointsDeleted, [names[2], names[1]]);
      assert.deepEqual(r.checkpointsLeft, []);
      assert.deepEqual(stale(), [], 'the deleted and the absent are unlisted');
      assert.ok(log.events.some((e) => e.kind === 'bitmaps-removed' && e.names.length === 2));
      assert.ok(!existsSync(join(guestDir(repo, 'web'), ids[0]!)), 'chain 1 is removed');
      const text = formatPrune(r).join('\n');
      assert.match(
        text,
        new RegExp(`deleted checkpoints from libvirt \\(with their bitmaps\\): ${names[2]}, ${names[1]}`),
      );
    } finally {
      await libvirtPool.closeAll();
      await fake.close();
    }
  });

  test('a checkpoint libvirt refuses to delete stays listed, with a warning; the rest go', async () => {
    const names = ids.map(bitmapName);
    const { fake, deletes } = await fakeWith([names[1]!, names[2]!, names[4]!], { refuse: names[2]! });
    try {
      const log = captureLogger();
      const r = (await prune('web', planned(fake.path), { log, dryRun: false })) as RepositoryPrune;
      assert.deepEqual(
        deletes.map((d) => d.name),
        [names[1]],
      );
      assert.deepEqual(r.checkpointsLeft, [names[2]]);
      assert.deepEqual(stale(), [names[2]]);
      const warning = log.events.find((e) => e.kind === 'warning');
      assert.match(
        warning && 'message' in warning ? warning.message : '',
        new RegExp(`could not delete checkpoint ${names[2]} .*stays listed, and the next backup deletes it`),
      );
    } finally {
      await libvirtPool.closeAll();
      await fake.close();
    }
  });

  test('libvirt unreachable: the files are removed all the same, the names stay listed, a warning says so', async () => {
    const log = captureLogger();
    const r = (await prune('web', planned(join(dir, 'no-such-socket')), { log, dryRun: false })) as RepositoryPrune;
    assert.equal(r.remove.length, 3);
    assert.ok(!existsSync(join(guestDir(repo, 'web'), ids[0]!)));
    const expected = [ids[0], ids[1], ids[2]].map((id) => bitmapName(id!)).sort();
    assert.deepEqual(stale(), expected);
    assert.deepEqual(r.checkpointsDeleted, []);
    assert.deepEqual(r.checkpointsLeft, expected);
    const warning = log.events.find((e) => e.kind === 'warning');
    assert.match(
      warning && 'message' in warning ? warning.message : '',
      /prune could not reach libvirt to delete checkpoints .*they stay listed, and the next backup deletes them/,
    );
    assert.match(formatPrune(r).join('\n'), /checkpoints for the next backup to delete from libvirt: /);
  });

  test('names listed before (an older prune) go too, but never a kept point’s', async () => {
    const names = ids.map(bitmapName);
    writeFileSync(join(guestDir(repo, 'web'), STALE_BITMAPS), JSON.stringify(['quiesce-old', names[4]]));
    const { fake, have, deletes } = await fakeWith(['quiesce-old', names[4]!]);
    try {
      const log = captureLogger();
      await prune('web', planned(fake.path, { keepLast: 5 }), { log, dryRun: false });
      assert.deepEqual(
        deletes.map((d) => d.name),
        ['quiesce-old'],
      );
      assert.deepEqual([...have], [names[4]]);
      assert.deepEqual(stale(), [names[4]], 'a kept point’s name is left alone, listed or not');
    } finally {
      await libvirtPool.closeAll();
      await fake.close();
    }
  });

  test('a dry run asks libvirt nothing and changes nothing', async () => {
    const { fake, deletes } = await fakeWith(ids.map(bitmapName));
    try {
      const r = (await prune('web', planned(fake.path), { log: captureLogger(), dryRun: true })) as RepositoryPrune;
      assert.equal(r.remove.length, 3);
      assert.deepEqual(deletes, []);
      assert.equal(fake.connections.length, 0);
      assert.deepEqual(stale(), []);
      assert.equal(r.checkpointsDeleted, undefined);
    } finally {
      await fake.close();
    }
  });
});
