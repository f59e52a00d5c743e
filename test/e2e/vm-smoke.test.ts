// A real guest under QEMU (TCG): each agent answers over the virtio-serial chardev, QMP works,
// and the guest's init does what later end-to-end tests rely on (agent args, restart loop, shutdown).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { Wire } from '../helpers/wire.js';
import {
  AGENT_MARKER,
  bootGuest,
  DATA_DEVICE,
  DATA_NODE,
  guestUnavailable,
  waitForAgentSync,
  type Guest,
} from '../helpers/vm/qemu.js';
import { Qmp } from '../helpers/vm/qmp.js';

const unavailable = guestUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');
const TIMEOUT = 300_000;

interface Case {
  kind: AgentKind;
  agentArgs: string[];
}

const cases: Case[] = [
  // -v: the agent logs each command at debug level, on the console.
  { kind: 'quiesce', agentArgs: ['-v'] },
  // -b: qemu-ga disables the listed command; guest-info shows it.
  { kind: 'qemu-ga', agentArgs: ['-b', 'guest-get-osinfo'] },
];

for (const { kind, agentArgs } of cases) {
  describe(`a TCG guest running ${kind}`, { skip: unavailable, timeout: TIMEOUT }, () => {
    let guest: Guest | undefined;
    let wire: Wire | undefined;

    before(async () => {
      guest = await bootGuest({ agent: kind, agentArgs });
    });

    after(async () => {
      wire?.close();
      await guest?.stop();
      if (guest) assert.equal(guest.running(), false, 'QEMU is gone after stop()');
    });

    test('boots to an answering agent', (t) => {
      const g = guest!;
      const tm = g.timings;
      t.diagnostic(
        `${kind}: agent marker ${tm.markerMs} ms, agent answering ${tm.agentReadyMs} ms after QEMU start ` +
          `(guest uptime at agent start ${tm.guestUptimeAtAgentS} s; initramfs ${tm.initrdBuilt ? 'built' : 'cached'} ${tm.initrdMs} ms)`,
      );
      assert.match(g.console(), /QUIESCE-VM: data mounted/);
      const m = AGENT_MARKER.exec(g.console());
      assert.equal(m?.[1], kind);
      assert.equal(m?.[2], '1');
    });

    test('guest-ping, guest-info and guest-sync answer over the chardev socket', async () => {
      wire = await Wire.open(guest!.qgaSocket);
      assert.deepEqual(await wire.call('guest-ping'), { return: {} });
      const info = (await wire.call('guest-info')) as {
        return: { version: string; supported_commands: { name: string; enabled: boolean }[] };
      };
      assert.equal(typeof info.return.version, 'string');
      const names = info.return.supported_commands.map((c) => c.name);
      for (const c of ['guest-ping', 'guest-sync', 'guest-info']) assert.ok(names.includes(c), c);
      assert.deepEqual(await wire.call('guest-sync', { id: 123456 }), { return: 123456 });

      // The extra agent arguments from the kernel command line reached the agent.
      if (kind === 'quiesce') {
        await guest!.waitForConsole(/debug: running command guest-sync/, 30_000);
      } else {
        const osinfo = info.return.supported_commands.find((c) => c.name === 'guest-get-osinfo');
        assert.equal(osinfo?.enabled, false);
      }
    });

    test('QMP: greeting, qmp_capabilities, query-status, the data disk', async () => {
      const qmp = await Qmp.open(guest!.qmpSocket);
      try {
        assert.ok('version' in qmp.greeting);
        const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
        assert.equal(status.status, 'running');
        assert.equal(status.running, true);
        const blocks = await qmp.execute<{ qdev: string; inserted?: { 'node-name': string } }[]>('query-block');
        const data = blocks.find((b) => b.qdev.includes(DATA_DEVICE));
        assert.equal(data?.inserted?.['node-name'], DATA_NODE);
      } finally {
        qmp.close();
      }
    });

    if (kind === 'qemu-ga') {
      test('init restarts an agent that died', async () => {
        const g = guest!;
        const pid = AGENT_MARKER.exec(g.console())![3];
        wire ??= await Wire.open(g.qgaSocket);
        // Late enough for the guest-exec reply to get out before the agent dies.
        await wire.call('guest-exec', { path: '/bin/sh', arg: ['-c', `sleep 0.5; kill -9 ${pid}`] });
        await g.waitForConsole(new RegExp(`agent exited kind=qemu-ga n=1 pid=${pid} status=137`), 60_000);
        await g.waitForConsole(/agent started kind=qemu-ga n=2 /, 60_000);
        wire.close();
        wire = undefined;
        await waitForAgentSync(g.qgaSocket, 60_000);
        wire = await Wire.open(g.qgaSocket);
        assert.deepEqual(await wire.call('guest-ping'), { return: {} });
      });

      test('guest-shutdown powers the guest off (QEMU exits)', async () => {
        const g = guest!;
        wire ??= await Wire.open(g.qgaSocket);
        wire.send('{"execute":"guest-shutdown"}'); // no reply on success
        assert.equal(await g.waitForExit(120_000), true, `still running; console:\n${g.console()}`);
        assert.match(g.console(), /QUIESCE-VM: shutdown poweroff/);
      });
    }
  });
}

describe('a failed boot leaves nothing behind', { skip: unavailable, timeout: TIMEOUT }, () => {
  const ours = (): string[] => readdirSync(tmpdir()).filter((n) => n.startsWith('quiesce-vm-'));
  const qemuWith = (needle: string): string[] =>
    readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .flatMap((p) => {
        try {
          const cmd = readFileSync(`/proc/${p}/cmdline`, 'latin1');
          return cmd.includes('qemu-system') && cmd.includes(needle) ? [p] : [];
        } catch {
          return [];
        }
      });

  test('QEMU refuses its arguments', async () => {
    const before = ours();
    await assert.rejects(bootGuest({ extraQemuArgs: ['-no-such-option'] }), /QEMU did not start/);
    assert.deepEqual(ours(), before);
  });

  test('init fails (unknown agent): the guest powers off and the error says why', async () => {
    const before = ours();
    await assert.rejects(bootGuest({ kernelArgs: ['quiesce.agent=nope'] }), /FATAL: unknown quiesce.agent=nope/);
    assert.deepEqual(ours(), before);
    assert.deepEqual(qemuWith('quiesce.agent=nope'), []);
  });

  test('the boot times out: QEMU is killed', async () => {
    const before = ours();
    await assert.rejects(bootGuest({ bootTimeoutMs: 300, kernelArgs: ['quiesce.test=timeout'] }), /timeout/);
    assert.deepEqual(ours(), before);
    assert.deepEqual(qemuWith('quiesce.test=timeout'), []);
  });
});
