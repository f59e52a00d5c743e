// Power commands for real, watched from QEMU's side through the product QMP client:
// guest-suspend-ram → SUSPEND, system_wakeup → WAKEUP and the agent answers again;
// guest-shutdown → SHUTDOWN and QEMU exits.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { guestAgent } from '../../src/guest/connect.js';
import { isEnabled, parseCapabilities } from '../../src/guest/capabilities.js';
import type { GuestAgent } from '../../src/guest/types.js';
import { QmpClient } from '../../src/qmp/client.js';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { bootGuest, guestUnavailable, waitForAgentSync, type Guest } from '../helpers/vm/qemu.js';

const unavailable = guestUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');

/** Why the agent cannot run `command` (absent, disabled, or answering that it is unsupported), or undefined. */
async function unsupported(agent: GuestAgent, command: string): Promise<string | undefined> {
  const caps = parseCapabilities(await agent.execute('guest-info'));
  return isEnabled(caps, command) ? undefined : `${caps.version} has no enabled ${command}`;
}

for (const kind of ['qemu-ga', 'quiesce'] as AgentKind[]) {
  describe(`power commands of ${kind} in a TCG guest`, { skip: unavailable, timeout: 600_000 }, () => {
    let guest: Guest | undefined;
    let qmp: QmpClient | undefined;

    before(async () => {
      guest = await bootGuest({ agent: kind });
      qmp = await QmpClient.connect(guest.qmpSocket, { commandTimeoutMs: 30_000 });
    });
    after(async () => {
      qmp?.close();
      await guest?.stop();
    });

    test('guest-suspend-ram: QEMU emits SUSPEND, system_wakeup brings the guest back, the agent answers', async (t: TestContext) => {
      const g = guest!;
      const q = qmp!;
      const agent = await guestAgent({ kind: 'socket', path: g.qgaSocket });
      try {
        const why = await unsupported(agent, 'guest-suspend-ram');
        if (why) return t.skip(why);
        const t0 = performance.now();
        let suspendedMs = NaN;
        const suspended = q
          .waitForEvent((e) => e.event === 'SUSPEND', { timeoutMs: 60_000, what: 'SUSPEND' })
          .then(() => (suspendedMs = performance.now() - t0));
        try {
          // No reply on success: the client syncs afterwards and counts silence (the guest sleeps) as success.
          await agent.execute('guest-suspend-ram', undefined, { timeoutMs: 5000 });
        } catch (err) {
          suspended.catch(() => undefined);
          // An agent that answers with an error has no working suspend.
          if (/not supported|has not been found|CommandNotFound|Unsupported/i.test((err as Error).message))
            return t.skip(`${kind}: ${(err as Error).message}`);
          throw err;
        }
        await suspended;
        assert.equal((await q.execute<{ status: string }>('query-status')).status, 'suspended');
        const wakeSince = q.lastEventSeq();
        await q.execute('system_wakeup');
        await q.waitForEvent((e) => e.event === 'WAKEUP', { since: wakeSince, timeoutMs: 60_000, what: 'WAKEUP' });
        assert.equal((await q.execute<{ status: string }>('query-status')).status, 'running');
        await agent.close();
        await waitForAgentSync(g.qgaSocket, 60_000);
        const again = await guestAgent({ kind: 'socket', path: g.qgaSocket });
        try {
          assert.deepEqual(await again.execute('guest-ping'), {});
        } finally {
          await again.close();
        }
        t.diagnostic(
          `${kind}: SUSPEND ${suspendedMs.toFixed(0)} ms after guest-suspend-ram; agent answering after system_wakeup`,
        );
      } finally {
        await agent.close();
      }
    });

    test('guest-shutdown: QEMU emits SHUTDOWN (guest-initiated) and exits', async (t: TestContext) => {
      const g = guest!;
      const q = qmp!;
      const agent = await guestAgent({ kind: 'socket', path: g.qgaSocket });
      try {
        const why = await unsupported(agent, 'guest-shutdown');
        if (why) return t.skip(why);
        const since = q.lastEventSeq();
        try {
          await agent.execute('guest-shutdown', undefined, { timeoutMs: 20_000 });
        } catch (err) {
          if (/not supported|has not been found|CommandNotFound|Unsupported/i.test((err as Error).message))
            return t.skip(`${kind}: ${(err as Error).message}`);
          throw err;
        }
        const e = await q
          .waitForEvent((x) => x.event === 'SHUTDOWN', { since, timeoutMs: 120_000, what: 'SHUTDOWN' })
          .catch((err: Error) => {
            // QEMU may exit before the event is read; the exit below is the proof then.
            t.diagnostic(`no SHUTDOWN event read: ${err.message}`);
            return undefined;
          });
        if (e) assert.equal(e.data['guest'], true, JSON.stringify(e.data));
        assert.equal(await g.waitForExit(120_000), true, `QEMU still running; console:\n${g.console().slice(-2000)}`);
        assert.match(g.console(), /QUIESCE-VM: shutdown poweroff/);
        t.diagnostic(`${kind}: SHUTDOWN ${e ? JSON.stringify(e.data) : '(not read)'}; QEMU exited`);
      } finally {
        await agent.close();
      }
    });
  });
}
