// The agent commands libvirt drives, for real inside the TCG guest, with both agents: one libvirt
// domain runs qemu-ga 7.2, another quiesce-agent, and every virsh command below must give the same
// (normalised) output or the same error for both. State-changing commands (set-time, set-vcpus,
// ssh keys, set-user-password, fstrim) act inside the guests only.
// Normalised: clock readings (domtime; user login times in guestinfo --user)
// and guest-exec pids. Nothing else. Both guests run with 2 vcpus (defineGuest's vcpus option), and
// before the tests root gets /etc/passwd + /etc/shadow entries inside each guest (the initramfs has none).
// Not possible in this guest, compared as equal errors: set-user-password (busybox has no chpasswd).
// guest-set-time with a time: busybox's date (the only one in this guest) takes @SECONDS without a
// fraction; quiesce-agent's clock setter falls back to it (this test found it failing with @SEC.USEC).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { defineGuest, ensureLibvirtd, libvirtUnavailable, virsh, type LibvirtGuest } from '../helpers/libvirt.js';

const unavailable = libvirtUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];
const SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOquiesceTestKeyOnlyForTheTCGGuest0000000000 test@quiesce';

type Outcome = { ok: true; out: string } | { ok: false; err: string };

describe(
  'agent commands through libvirt: qemu-ga and quiesce-agent agree',
  { skip: unavailable, timeout: 600_000 },
  () => {
    const guests = new Map<AgentKind, LibvirtGuest>();

    before(async () => {
      await ensureLibvirtd();
      const booted = await Promise.allSettled(KINDS.map((agent) => defineGuest({ agent, vcpus: 2 })));
      booted.forEach((r, i) => {
        if (r.status === 'fulfilled') guests.set(KINDS[i]!, r.value);
      });
      const failed = booted.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      // The initramfs has no /etc/passwd: give root an entry (home /root) inside each guest so the
      // per-user commands (ssh keys, set-user-password) reach their real work.
      for (const g of guests.values()) {
        const r = await execIn(g, '/bin/sh', [
          '-c',
          'echo root:x:0:0:root:/root:/bin/sh >/etc/passwd; echo root:*:1:0:99999:7::: >/etc/shadow; mkdir -p /root',
        ]);
        assert.equal(r.exitcode, 0, `${g.agent}: /etc/passwd set up inside the guest`);
      }
    });

    after(async () => {
      // Destroy both even if one fails (destroy() also removes the guest's directory).
      const done = await Promise.allSettled([...guests.values()].map((g) => g.destroy()));
      const failed = done.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      const left = (await virsh(['list', '--all', '--name'])).split('\n');
      for (const g of guests.values()) assert.ok(!left.includes(g.name), `domain ${g.name} is gone`);
    });

    /** Runs a virsh command against each guest (`DOMAIN` in args is its name), errors normalised to DOMAIN. */
    async function onBoth(args: readonly string[]): Promise<Record<AgentKind, Outcome>> {
      const out = {} as Record<AgentKind, Outcome>;
      for (const kind of KINDS) {
        const g = guests.get(kind)!;
        try {
          out[kind] = { ok: true, out: await virsh(args.map((a) => (a === 'DOMAIN' ? g.name : a))) };
        } catch (err) {
          const msg = (err as Error).message;
          // Losing libvirtd is no agent's answer: fail rather than compare two equal connection errors.
          if (/failed to connect to the hypervisor|Disconnected from qemu:|End of file while reading/.test(msg))
            throw err;
          out[kind] = { ok: false, err: msg.split(g.name).join('DOMAIN') };
        }
      }
      return out;
    }

    async function agentBoth(execute: string, args?: Record<string, unknown>): Promise<Record<AgentKind, Outcome>> {
      const req = JSON.stringify(args === undefined ? { execute } : { execute, arguments: args });
      return onBoth(['qemu-agent-command', 'DOMAIN', req]);
    }

    function same(r: Record<AgentKind, Outcome>, norm: (s: string) => string = (s) => s): Outcome {
      const n = (o: Outcome): Outcome => (o.ok ? { ok: true, out: norm(o.out) } : o);
      assert.deepEqual(n(r['quiesce']), n(r['qemu-ga']));
      return n(r['qemu-ga']);
    }

    test('guestinfo, group by group', async (t) => {
      for (const group of ['--os', '--timezone', '--hostname', '--user', '--filesystem', '--disk', '--interface']) {
        // Every group answers: a refused one (an unknown option, a command the agent lacks) fails here.
        const each = await onBoth(['guestinfo', 'DOMAIN', group]);
        for (const k of KINDS) assert.ok(each[k].ok, `${k}: guestinfo ${group}: ${JSON.stringify(each[k])}`);
        const r = same(each, (s) => s.replace(/^(user\.\d+\.login-time\s*:\s*)\d+$/gm, '$1<time>'));
        t.diagnostic(`guestinfo ${group}: ${r.ok ? r.out.trim().split('\n').length + ' lines' : r.err}`);
      }
    });

    test('domhostname --source agent and guestvcpus', async () => {
      const h = same(await onBoth(['domhostname', 'DOMAIN', '--source', 'agent']));
      assert.ok(h.ok, JSON.stringify(h));
      const v = same(await onBoth(['guestvcpus', 'DOMAIN']));
      assert.ok(v.ok && /vcpus\s*:\s*0-1/.test(v.out), JSON.stringify(v));
    });

    const readTime = (o: Outcome): number => {
      assert.ok(o.ok, JSON.stringify(o));
      const m = /^Time: (\d+)$/m.exec(o.out);
      assert.ok(m, o.out);
      return Number(m[1]);
    };
    const now = (): number => Math.floor(Date.now() / 1000);

    test('domtime and domtime --sync', async () => {
      const r = await onBoth(['domtime', 'DOMAIN']);
      same(r, (s) => s.replace(/\d+/, '<time>'));
      for (const k of KINDS) assert.ok(Math.abs(readTime(r[k]) - now()) < 120, `${k}: guest clock near the host's`);
      // --sync: guest-set-time without a time (hwclock -s from the RTC).
      same(await onBoth(['domtime', 'DOMAIN', '--sync']));
      const synced = await onBoth(['domtime', 'DOMAIN']);
      for (const k of KINDS) assert.ok(Math.abs(readTime(synced[k]) - now()) < 120, `${k}: clock from the RTC`);
    });

    // guest-set-time with a time, for real: set the guest clock three days ahead, read it back; the set
    // also wrote the RTC (hwclock -w), so --sync (hwclock -s) keeps it ahead. One guest at a time.
    async function setTimeAndReadBack(kind: AgentKind): Promise<Outcome[]> {
      const g = guests.get(kind)!;
      const run = async (args: string[]): Promise<Outcome> => {
        try {
          return { ok: true, out: await virsh([args[0]!, g.name, ...args.slice(1)]) };
        } catch (err) {
          return { ok: false, err: (err as Error).message.split(g.name).join('DOMAIN') };
        }
      };
      const target = now() + 86_400 * 3; // unmistakable
      const set = await run(['domtime', '--time', String(target)]);
      const back = await run(['domtime']);
      const sync = await run(['domtime', '--sync']);
      const synced = await run(['domtime']);
      assert.deepEqual(set, { ok: true, out: '\n' }, `${kind}: domtime --time`);
      assert.ok(Math.abs(readTime(back) - target) < 60, `${kind}: guest clock was set`);
      assert.deepEqual(sync, { ok: true, out: '\n' }, `${kind}: domtime --sync`);
      assert.ok(Math.abs(readTime(synced) - target) < 60, `${kind}: the RTC was written`);
      return [set, sync];
    }

    test('domtime --time N, read back, then --sync: qemu-ga (the reference)', async () => {
      await setTimeAndReadBack('qemu-ga');
    });

    test('domtime --time N, read back, then --sync: quiesce-agent does the same', async () => {
      await setTimeAndReadBack('quiesce');
    });

    test('domfstrim', async (t) => {
      const r = same(await onBoth(['domfstrim', 'DOMAIN']));
      t.diagnostic(`domfstrim: ${JSON.stringify(r)}`);
    });

    test('set-user-password root', async (t) => {
      const before = Object.fromEntries(
        await Promise.all(KINDS.map(async (k) => [k, await readGuestFile(guests.get(k)!, '/etc/shadow')])),
      );
      const r = same(await onBoth(['set-user-password', 'DOMAIN', 'root', 'quiesce-test-pw']));
      t.diagnostic(`set-user-password: ${JSON.stringify(r)}`);
      for (const k of KINDS) {
        const after = await readGuestFile(guests.get(k)!, '/etc/shadow');
        if (r.ok) assert.notEqual(after, before[k], `${k}: /etc/shadow changed`);
        else assert.equal(after, before[k], `${k}: /etc/shadow untouched after the failure`);
      }
    });

    test('guest-exec /bin/echo hi, then guest-exec-status until exited', async () => {
      const started = await agentBoth('guest-exec', { path: '/bin/echo', arg: ['hi'], 'capture-output': true });
      same(started, (s) => s.replace(/"pid":\d+/, '"pid":0'));
      const status = {} as Record<AgentKind, Outcome>;
      for (const k of KINDS) {
        const o = started[k];
        assert.ok(o.ok);
        const pid = (JSON.parse(o.out) as { return: { pid: number } }).return.pid;
        status[k] = { ok: true, out: JSON.stringify(await waitExited(guests.get(k)!, pid)) };
      }
      const s = same(status);
      assert.deepEqual(JSON.parse((s as { out: string }).out), {
        exited: true,
        exitcode: 0,
        'out-truncated': false,
        'out-data': Buffer.from('hi\n').toString('base64'),
      });
    });

    test('guest-ssh-add/get/remove-authorized-keys for root', async () => {
      same(await agentBoth('guest-ssh-add-authorized-keys', { username: 'root', keys: [SSH_KEY] }));
      const got = same(await agentBoth('guest-ssh-get-authorized-keys', { username: 'root' }));
      assert.ok(got.ok);
      assert.deepEqual(JSON.parse(got.out), { return: { keys: [SSH_KEY] } });
      // Inside the guests: the file holds the key (both agents write it without a trailing newline).
      const file = async (k: AgentKind): Promise<string> => readGuestFile(guests.get(k)!, '/root/.ssh/authorized_keys');
      assert.equal(await file('qemu-ga'), SSH_KEY);
      assert.equal(await file('quiesce'), SSH_KEY);
      same(await agentBoth('guest-ssh-remove-authorized-keys', { username: 'root', keys: [SSH_KEY] }));
      assert.equal(await file('qemu-ga'), '');
      assert.equal(await file('quiesce'), '');
      assert.deepEqual(
        JSON.parse(
          (same(await agentBoth('guest-ssh-get-authorized-keys', { username: 'root' })) as { out: string }).out,
        ),
        { return: { keys: [] } },
      );
    });

    test('guest-set-vcpus offlines vcpu 1, then onlines it', async () => {
      same(await agentBoth('guest-get-vcpus'));
      const off = same(await agentBoth('guest-set-vcpus', { vcpus: [{ 'logical-id': 1, online: false }] }));
      assert.deepEqual(off, { ok: true, out: '{"return":1}\n\n' });
      const got = same(await agentBoth('guest-get-vcpus'));
      assert.ok(got.ok && got.out.includes('"online":false'), JSON.stringify(got));
      const count = same(await onBoth(['vcpucount', 'DOMAIN', '--guest']));
      assert.ok(count.ok && count.out.trim() === '1', JSON.stringify(count));
      same(await agentBoth('guest-set-vcpus', { vcpus: [{ 'logical-id': 1, online: true }] }));
      const again = same(await onBoth(['vcpucount', 'DOMAIN', '--guest']));
      assert.ok(again.ok && again.out.trim() === '2', JSON.stringify(again));
    });

    test('guest-get-memory-blocks / guest-set-memory-blocks', async (t) => {
      // This guest's kernel exposes /sys/devices/system/memory: both agents list the same blocks.
      const blocks = same(await agentBoth('guest-get-memory-blocks'));
      assert.ok(blocks.ok, JSON.stringify(blocks));
      type Block = { 'phys-index': number; online: boolean; 'can-offline'?: boolean };
      const list = (JSON.parse(blocks.out) as { return: Block[] }).return;
      assert.ok(list.length > 0);
      const last = list.at(-1)!['phys-index'];
      const set = (blk: number, online: boolean): Promise<Record<AgentKind, Outcome>> =>
        agentBoth('guest-set-memory-blocks', { 'mem-blks': [{ 'phys-index': blk, online }] });
      // Deterministic: onlining an online block, offlining a block that does not exist.
      same(await set(last, true));
      same(await set(1_000_000, false));
      // Offlining a real block, for real: whether the kernel can migrate its pages away right now is
      // guest state, not agent behaviour (the same agent gets "success" one run and EBUSY the next),
      // so each answer must be one of those two; the block is onlined again afterwards.
      const off = await set(last, false);
      for (const k of KINDS) {
        const o = off[k];
        assert.ok(o.ok, JSON.stringify(o));
        const [r] = (JSON.parse(o.out) as { return: Record<string, unknown>[] }).return;
        assert.ok(
          r!['response'] === 'success' || (r!['response'] === 'operation-failed' && r!['error-code'] === 16),
          `${k}: ${o.out}`,
        );
        t.diagnostic(`${k}: offline memory block ${last}: ${o.out.trim()}`);
      }
      const on = same(await set(last, true));
      assert.ok(on.ok && on.out.includes('"response":"success"'), JSON.stringify(on));
    });
  },
);

async function execIn(
  g: LibvirtGuest,
  path: string,
  arg: string[],
): Promise<{ exitcode: number | undefined; out: string }> {
  const r = (await g.agentCommand('guest-exec', { path, arg, 'capture-output': true })) as { return: { pid: number } };
  const s = await waitExited(g, r.return.pid);
  return {
    exitcode: s['exitcode'] as number | undefined,
    out: Buffer.from((s['out-data'] as string) ?? '', 'base64').toString(),
  };
}

async function waitExited(g: LibvirtGuest, pid: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = ((await g.agentCommand('guest-exec-status', { pid })) as { return: Record<string, unknown> }).return;
    if (s['exited'] === true) return s;
    assert.ok(Date.now() < deadline, `guest-exec pid ${pid} did not exit`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A file's content read inside the guest (cat through guest-exec), '' when absent. */
async function readGuestFile(g: LibvirtGuest, path: string): Promise<string> {
  return (await execIn(g, '/bin/sh', ['-c', `cat ${path} 2>/dev/null || true`])).out;
}
