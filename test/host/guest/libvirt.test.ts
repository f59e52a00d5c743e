// The libvirt connector against a real libvirtd managing a TCG guest (test/helpers/libvirt.ts): over
// libvirt's RPC protocol (libvirt does its own guest-sync), its replies and errors mapped to ours; the
// virsh fallback (VirshAgent) answers the same.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LibvirtAgent } from '../../../src/guest/connectors/libvirt.js';
import { VirshAgent } from '../../../src/guest/connectors/libvirt-virsh.js';
import { AgentError } from '../../../src/errors.js';
import { parseCapabilities, isEnabled } from '../../../src/guest/capabilities.js';
import { resolveConfig } from '../../../src/config/load.js';
import { execute } from '../../../src/workflow/executor.js';
import { newRunId, plan } from '../../../src/workflow/plan.js';
import { SignalGuard } from '../../../src/workflow/signals.js';
import { captureLogger } from '../../../src/log/logger.js';
import { haveQemuGa } from '../../helpers/agents.js';
import {
  defineGuest,
  ensureLibvirtd,
  LIBVIRT_URI,
  libvirtUnavailable,
  virsh,
  type LibvirtGuest,
} from '../../helpers/libvirt.js';
import { GUEST_DATA_MOUNT } from '../../helpers/vm/qemu.js';

const unavailable = libvirtUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');

describe('libvirt connector against a libvirtd guest running qemu-ga', { skip: unavailable, timeout: 300_000 }, () => {
  let guest: LibvirtGuest | undefined;
  let agent: LibvirtAgent;
  let stateDir: string;

  before(async () => {
    await ensureLibvirtd();
    guest = await defineGuest({ agent: 'qemu-ga' });
    agent = new LibvirtAgent({ uri: LIBVIRT_URI, domain: guest.name });
    stateDir = mkdtempSync(join(tmpdir(), 'libvirt-state-'));
  });
  after(async () => {
    // Its lease holds the shared libvirt connection (and the process) open until it is closed.
    await agent?.close();
    await guest?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  test('ping and info over the RPC connection', async () => {
    assert.deepEqual(await agent.execute('guest-ping'), {});
    assert.equal(agent.via, 'rpc');
    const caps = parseCapabilities(await agent.execute('guest-info'));
    assert.ok(isEnabled(caps, 'guest-fsfreeze-freeze-list'));
    assert.equal(await agent.execute('guest-sync', { id: 4242 }), 4242);
  });

  test("an agent error comes back as an AgentError with the agent's text", async () => {
    const err = await agent.execute('guest-file-open', { path: '/nonexistent/x' }).catch((e: unknown) => e);
    assert.ok(err instanceof AgentError, String(err));
    assert.match(err.desc, /failed to open file '\/nonexistent\/x' \(mode: 'r'\): No such file or directory/);
  });

  test('the virsh fallback answers the same (reply, and the agent error)', async () => {
    const v = new VirshAgent({ uri: LIBVIRT_URI, domain: guest!.name });
    assert.deepEqual(await v.execute('guest-sync', { id: 7 }), 7);
    const err = await v.execute('guest-file-open', { path: '/nonexistent/x' }).catch((e: unknown) => e);
    const ours = await agent.execute('guest-file-open', { path: '/nonexistent/x' }).catch((e: unknown) => e);
    assert.ok(err instanceof AgentError && ours instanceof AgentError);
    assert.equal(err.desc, ours.desc);
  });

  test("freeze-list and thaw of the guest's data disk", async () => {
    assert.equal(await agent.execute('guest-fsfreeze-freeze-list', { mountpoints: [GUEST_DATA_MOUNT] }), 1);
    try {
      assert.equal(await agent.execute('guest-fsfreeze-status'), 'frozen');
    } finally {
      assert.equal(await agent.execute('guest-fsfreeze-thaw'), 1);
    }
    assert.equal(await agent.execute('guest-fsfreeze-status'), 'thawed');
  });

  test('a whole job through the libvirt connector: frozen snapshot, thaw proven', async () => {
    const config = resolveConfig(
      {
        stateDir,
        guests: {
          [guest!.name]: {
            connector: { type: 'libvirt', domain: guest!.name, uri: LIBVIRT_URI },
            freeze: [GUEST_DATA_MOUNT],
            // While frozen, ask libvirt for the disk's state, as a real snapshot command would.
            snapshot: { provider: 'command', argv: ['virsh', '-c', LIBVIRT_URI, 'domblklist', '{guest}'] },
          },
        },
        jobs: { j: { guests: [guest!.name] } },
      },
      'test',
    );
    const p = plan(config, 'j', { runId: newRunId(new Date()), now: new Date() });
    const log = captureLogger();
    const report = await execute(p, { log, signals: new SignalGuard(log) });
    const r = report.guests[0]!;
    assert.equal(report.exitCode, 0, JSON.stringify(r.errors));
    assert.equal(r.consistency, 'filesystem');
    assert.equal(r.frozenFilesystems, 1);
    assert.equal(r.thawProven, true);
    assert.equal(await agent.execute('guest-fsfreeze-status'), 'thawed');
  });

  test('guest-shutdown (no reply on success) powers the domain off', async () => {
    const bad = await agent.execute('guest-shutdown', { mode: 'sideways' }).catch((e: unknown) => e);
    assert.ok(bad instanceof AgentError && /mode is invalid/.test(bad.desc), String(bad));
    assert.equal(await agent.execute('guest-shutdown', undefined, { timeoutMs: 5000 }), undefined);
    for (let i = 0; i < 120; i++) {
      const state = (await virsh(['domstate', guest!.name]).catch(() => 'gone')).trim();
      if (state !== 'running') return;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.fail('the domain is still running 60 s after guest-shutdown');
  });
});
