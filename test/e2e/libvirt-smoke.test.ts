// The test guest under a real libvirtd: a transient domain boots, libvirt reaches the agent on its
// own channel (qemu-agent-command), and domfsfreeze/domfsthaw of the guest's /data work with qemu-ga.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { defineGuest, ensureLibvirtd, libvirtUnavailable, virsh, type LibvirtGuest } from '../helpers/libvirt.js';
import { GUEST_DATA_MOUNT } from '../helpers/vm/qemu.js';

const unavailable = libvirtUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');
const TIMEOUT = 300_000;

for (const kind of ['qemu-ga', 'quiesce'] as AgentKind[]) {
  describe(`a libvirt domain running ${kind}`, { skip: unavailable, timeout: TIMEOUT }, () => {
    let guest: LibvirtGuest | undefined;

    before(async () => {
      await ensureLibvirtd();
      guest = await defineGuest({ agent: kind });
    });

    after(async () => {
      const name = guest?.name;
      await guest?.destroy();
      if (name) {
        const left = await virsh(['list', '--all', '--name']);
        assert.ok(!left.split('\n').includes(name), `domain ${name} is gone`);
      }
    });

    test('the domain runs and its agent answers through libvirt', async (t) => {
      const g = guest!;
      t.diagnostic(
        `${kind} under libvirt: agent marker ${g.timings.markerMs} ms, guest-ping ${g.timings.agentReadyMs} ms`,
      );
      assert.equal((await virsh(['domstate', g.name])).trim(), 'running');
      const started = Date.now();
      assert.deepEqual(await g.agentCommand('guest-ping'), { return: {} });
      t.diagnostic(`virsh qemu-agent-command guest-ping: ${Date.now() - started} ms`);
      const info = (await g.agentCommand('guest-info')) as { return: { version: string } };
      assert.equal(typeof info.return.version, 'string');
    });

    if (kind === 'qemu-ga') {
      test('domfsfreeze / domfsthaw of /data', async (t) => {
        const g = guest!;
        const t0 = Date.now();
        assert.match(await virsh(['domfsfreeze', g.name, '--mountpoint', GUEST_DATA_MOUNT]), /Froze 1 filesystem/);
        const t1 = Date.now();
        try {
          assert.deepEqual(await g.agentCommand('guest-fsfreeze-status'), { return: 'frozen' });
        } finally {
          // libvirt refuses --mountpoint for a thaw (guest-fsfreeze-thaw thaws all that is frozen).
          assert.match(await virsh(['domfsthaw', g.name]), /Thawed 1 filesystem/);
        }
        t.diagnostic(`domfsfreeze ${t1 - t0} ms, frozen → thawed ${Date.now() - t1} ms`);
        assert.deepEqual(await g.agentCommand('guest-fsfreeze-status'), { return: 'thawed' });
      });
    }
  });
}
