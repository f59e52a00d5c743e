// quiesce-agent beside qemu-ga 7.2 on the test's own loop mounts. The reference is only ever sent
// freeze-list with those mountpoints (never a bare freeze).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { haveQemuGa } from '../../helpers/agents.js';
import { loopMountSkipReason, useLoopMounts, writeCompletes } from '../../helpers/loop-mounts.js';
import { inNs, markerState, ours, reference, type Client } from './fsfreeze-rig.js';

const SKIP =
  loopMountSkipReason(['ext4', 'xfs', 'btrfs']) ||
  (haveQemuGa() ? false : 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)');

type Info = { supported_commands: { name: string; enabled: boolean; 'success-response': boolean }[] };

describe('fsfreeze: quiesce-agent and qemu-ga side by side', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4', 'xfs', 'btrfs']);
  const mnts = (): string[] => mounts.map((m) => m.mnt);
  let q: Client;
  let r: Client;
  /** Commands both agents register. */
  let common: Set<string>;
  before(async () => {
    q = await ours(mnts(), inNs(mounts));
    r = await reference(inNs(mounts));
    const names = async (c: Client) => (await c.ok<Info>('guest-info')).supported_commands.map((x) => x.name);
    const theirs = new Set(await names(r));
    common = new Set((await names(q)).filter((n) => theirs.has(n)));
  });
  after(async () => {
    await q?.close();
    await r?.close();
  });

  /** The same request to both. */
  async function same(execute: string, args?: unknown): Promise<unknown> {
    const a = await q.call(execute, args);
    const b = await r.call(execute, args);
    assert.deepEqual(a, b, `${execute} ${JSON.stringify(args)}`);
    return a;
  }

  /** While frozen: status, which commands guest-info enables (those both have), the refusal texts. */
  async function frozenView(c: Client): Promise<unknown> {
    const info = await c.ok<Info>('guest-info');
    const enabled = Object.fromEntries(
      info.supported_commands
        .filter((x) => common.has(x.name))
        .map((x) => [x.name, [x.enabled, x['success-response']]]),
    );
    const refusals = [];
    for (const x of ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-get-fsinfo'])
      refusals.push(await c.call(x));
    return { status: await c.ok('guest-fsfreeze-status'), enabled, refusals, marker: markerState(c.agent.statedir) };
  }

  test('guest-info lists the fsfreeze commands where the reference does (registration order)', async () => {
    const anchors = new Set([
      'guest-fsfreeze-status',
      'guest-fsfreeze-freeze',
      'guest-fsfreeze-freeze-list',
      'guest-fsfreeze-thaw',
      'guest-get-fsinfo',
      'guest-network-get-interfaces',
      'guest-info',
    ]);
    const order = async (c: Client) =>
      (await c.ok<Info>('guest-info')).supported_commands
        .map((x) => x.name)
        .filter((n) => anchors.has(n) && common.has(n));
    const ref = await order(r);
    assert.ok(ref.includes('guest-get-fsinfo') && ref.includes('guest-fsfreeze-thaw'), JSON.stringify(ref));
    assert.deepEqual(await order(q), ref);
  });

  test('status when thawed', async () => {
    assert.deepEqual(await same('guest-fsfreeze-status'), { return: 'thawed' });
  });

  test('freeze-list of ext4, xfs and btrfs: same count, same frozen mode, same marker; both thaws thaw', async () => {
    assert.equal(await q.ok('guest-fsfreeze-freeze-list', { mountpoints: mnts() }), 3);
    let oursFrozen: unknown;
    try {
      oursFrozen = await frozenView(q);
      for (const m of mounts) assert.equal(await writeCompletes(m, 300), false, m.mnt);
    } finally {
      assert.equal(await q.ok('guest-fsfreeze-thaw'), 3);
    }
    for (const m of mounts) assert.equal(await writeCompletes(m, 3000), true, m.mnt);

    assert.equal(await r.ok('guest-fsfreeze-freeze-list', { mountpoints: mnts() }), 3);
    let refFrozen: unknown;
    try {
      refFrozen = await frozenView(r);
    } finally {
      // The reference thaws every mount of the machine: ours at least.
      assert.ok((await r.ok<number>('guest-fsfreeze-thaw')) >= 3);
    }
    assert.deepEqual(oursFrozen, refFrozen);
    assert.equal((oursFrozen as { marker: string }).marker, 'ok');
    for (const m of mounts) assert.equal(await writeCompletes(m, 3000), true, m.mnt);
    await same('guest-fsfreeze-status');
  });

  test('freeze-list of paths that are not mounts: 0 and still thawed, no marker', async () => {
    await same('guest-fsfreeze-freeze-list', { mountpoints: ['/nonexistent/mount', mounts[0]!.dir] });
    await same('guest-fsfreeze-freeze-list', { mountpoints: [] });
    await same('guest-fsfreeze-status');
    assert.equal(markerState(q.agent.statedir), 'absent');
    assert.equal(markerState(r.agent.statedir), 'absent');
  });

  test('bad freeze-list arguments: the same errors (always with our mountpoints, so nothing else is at stake)', async () => {
    const m = mnts()[0]!;
    for (const args of [
      { mountpoints: m },
      { mountpoints: [m, 1] },
      { mountpoints: [m], extra: 1 },
      { mountpoints: { a: m } },
    ]) {
      const reply = (await same('guest-fsfreeze-freeze-list', args)) as { error?: unknown };
      assert.ok(reply.error, JSON.stringify(reply));
    }
    await same('guest-fsfreeze-status');
  });

  test('guest-get-fsinfo: identical entries for the loop mounts and for /', async () => {
    type Fs = {
      mountpoint: string;
      name: string;
      type: string;
      disk: unknown;
      'used-bytes'?: number;
      'total-bytes'?: number;
    };
    const a = await q.ok<Fs[]>('guest-get-fsinfo');
    const b = await r.ok<Fs[]>('guest-get-fsinfo');
    const pick = (list: Fs[], dir: string) => list.filter((f) => f.mountpoint === dir);
    for (const dir of mnts()) {
      assert.equal(pick(a, dir).length, 1, dir);
      assert.deepEqual(pick(a, dir), pick(b, dir), dir);
    }
    const root = (list: Fs[]) => pick(list, '/').map(({ name, type, disk }) => ({ name, type, disk }));
    assert.deepEqual(root(a), root(b));
    // Same mounts in the same (reversed mount) order, as far as both saw the same table.
    const order = (list: Fs[]) => list.map((f) => f.mountpoint).filter((d) => mnts().includes(d) || d === '/');
    assert.deepEqual(order(a), order(b));
  });
});
