// The copy of a libvirt push backup held through the thaw and let go after it, against a scripted
// connection (the real libvirtd: test/e2e/libvirt-provider.test.ts and libvirt-chain.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuiesceError } from '../../../../src/errors.js';
import { JobType } from '../../../../src/libvirt/protocol.js';
import type { DomainRef } from '../../../../src/libvirt/types.js';
import { HELD_MIB_S, holdCopies, releaseCopies, type SpeedControl } from '../../../../src/snapshot/libvirt/hold.js';

const DOM: DomainRef = { name: 'vm', uuid: Buffer.alloc(16, 7), id: 1 };

/** Records each set-speed; `refuse` names disks whose set-speed fails; `job` is what getJobInfo answers. */
function scripted(o: { refuse?: readonly string[]; job?: number | Error } = {}) {
  const calls: { disk: string; bandwidth: bigint; timeoutMs: number | undefined }[] = [];
  let jobAsked = 0;
  const conn: SpeedControl = {
    blockJobSetSpeed: async (dom, disk, bandwidth, _flags, opts) => {
      assert.equal(dom, DOM);
      calls.push({ disk, bandwidth, timeoutMs: opts?.timeoutMs });
      if (o.refuse?.includes(disk)) throw new Error(`disk ${disk} does not have an active block job`);
    },
    getJobInfo: async () => {
      jobAsked++;
      if (o.job instanceof Error) throw o.job;
      return { type: o.job ?? JobType.NONE };
    },
  };
  return { conn, calls, jobAsked: () => jobAsked };
}

test('holdCopies: every disk at HELD_MIB_S (1 MiB/s) with the call timeout; returns the disks held', async () => {
  const s = scripted();
  assert.equal(HELD_MIB_S, 1n);
  assert.deepEqual(await holdCopies(s.conn, DOM, ['vda', 'vdb'], { timeoutMs: 900 }), ['vda', 'vdb']);
  assert.deepEqual(s.calls, [
    { disk: 'vda', bandwidth: 1n, timeoutMs: 900 },
    { disk: 'vdb', bandwidth: 1n, timeoutMs: 900 },
  ]);
});

test('holdCopies: a copy that cannot be held (ended already) is left out, never an error', async () => {
  const s = scripted({ refuse: ['vda'] });
  assert.deepEqual(await holdCopies(s.conn, DOM, ['vda', 'vdb'], {}), ['vdb']);
  assert.deepEqual(await holdCopies(scripted({ refuse: ['vda'] }).conn, DOM, ['vda'], {}), []);
});

test('releaseCopies: each held disk back to 0 (no limit), in order; nothing asked about the job', async () => {
  const s = scripted();
  await releaseCopies(s.conn, DOM, ['vda', 'vdb'], 'g', { timeoutMs: 500 });
  assert.deepEqual(s.calls, [
    { disk: 'vda', bandwidth: 0n, timeoutMs: 500 },
    { disk: 'vdb', bandwidth: 0n, timeoutMs: 500 },
  ]);
  assert.equal(s.jobAsked(), 0);
});

test('releaseCopies: a refused lift after the job ended is fine (the copy finished)', async () => {
  const s = scripted({ refuse: ['vda'], job: JobType.NONE });
  await releaseCopies(s.conn, DOM, ['vda', 'vdb'], 'g', {});
  assert.equal(s.jobAsked(), 1);
  assert.deepEqual(
    s.calls.map((c) => c.disk),
    ['vda'],
    'the job ended: no other disk is left to let go',
  );
});

test('releaseCopies: a refused lift while the job runs is BLOCK_JOB_FAILED naming the disk and the cause', async () => {
  for (const job of [JobType.UNBOUNDED, new Error('connection reset')]) {
    const s = scripted({ refuse: ['vdb'], job });
    await assert.rejects(
      releaseCopies(s.conn, DOM, ['vda', 'vdb'], 'g1', {}),
      (e: unknown) =>
        e instanceof QuiesceError &&
        e.code === 'BLOCK_JOB_FAILED' &&
        e.guest === 'g1' &&
        /backup of vdb go at full speed after the thaw: disk vdb does not have an active block job/.test(e.message),
    );
  }
});
