// A crash inside the guest: the agent dies while /data is frozen (killed by an fsfreeze hook 2 s after
// its freeze), the guest's restart loop brings it back in frozen mode, the quiesce run that froze it
// is killed too (its journal record stays), and `quiesce recover` thaws the guest from that record.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isEnabled, parseCapabilities } from '../../src/guest/capabilities.js';
import { guestAgent } from '../../src/guest/connect.js';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { bootGuest, guestUnavailable, waitForAgentSync, type Guest } from '../helpers/vm/qemu.js';
import { lastWriterNumber, WRITER_ARG } from '../helpers/vm/writer.js';

const BIN = fileURLToPath(new URL('../../dist/src/bin.js', import.meta.url));
const unavailable =
  guestUnavailable() ??
  (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
  (existsSync(BIN) ? undefined : `no ${BIN} (npx tsc -b)`);
const HOOK = '/run/quiesce-vm/crash-hook';

for (const kind of ['qemu-ga', 'quiesce'] as AgentKind[]) {
  describe(`${kind} killed inside the guest while frozen`, { skip: unavailable, timeout: 600_000 }, () => {
    let guest: Guest | undefined;
    let dir: string;
    let skip: string | undefined;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'e2e-crash-'));
      guest = await bootGuest({
        agent: kind,
        agentArgs: [...(kind === 'quiesce' ? ['--fsfreeze-include=/data'] : []), `--fsfreeze-hook=${HOOK}`],
        kernelArgs: [WRITER_ARG, 'quiesce.crash_hook=1'],
      });
      const agent = await guestAgent({ kind: 'socket', path: guest.qgaSocket });
      try {
        const caps = parseCapabilities(await agent.execute('guest-info'));
        if (!isEnabled(caps, 'guest-fsfreeze-freeze-list')) skip = `${kind} ${caps.version} cannot freeze yet`;
      } finally {
        await agent.close();
      }
    });
    after(async () => {
      await guest?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    test('the agent comes back frozen, and quiesce recover (journal of the killed run) thaws it', async (t: TestContext) => {
      if (skip) return t.skip(skip);
      const g = guest!;
      const stateDir = join(dir, 'state');
      const config = join(dir, 'crash.json');
      writeFileSync(
        config,
        JSON.stringify({
          stateDir,
          guests: {
            vm: {
              connector: { type: 'socket', path: g.qgaSocket },
              freeze: ['/data'],
              // A long in-window step: the crash happens inside it.
              snapshot: { provider: 'command', argv: ['sleep', '120'] },
              timeouts: { freeze: '60s', thaw: '30s' },
            },
          },
          jobs: { j: { guests: ['vm'], budget: '150s' } },
        }),
      );
      const since = g.consoleOffset();
      const run = spawn(process.execPath, [BIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      run.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise((resolve) => run.once('exit', resolve));
      try {
        const hit = await g.waitForConsole(/QUIESCE-VM: crash hook kills agent pid=(\d+)/, 120_000, since);
        const writerAtCrash = lastWriterNumber(g.console());
        await g.waitForConsole(new RegExp(`agent exited kind=${kind} n=1 pid=${hit[1]} status=137`), 60_000, since);
        await g.waitForConsole(new RegExp(`agent started kind=${kind} n=2 `), 60_000, since);
        assert.equal(run.exitCode, null, `the run is still inside its window\n${stderr}`);
        run.kill('SIGKILL');
        await exited;
        assert.equal(readdirSync(join(stateDir, 'journal')).length, 1, 'the killed run left its journal record');

        await waitForAgentSync(g.qgaSocket, 60_000);
        const agent = await guestAgent({ kind: 'socket', path: g.qgaSocket });
        try {
          assert.equal(
            await agent.execute('guest-fsfreeze-status'),
            'frozen',
            'the restarted agent knows it is frozen',
          );
        } finally {
          await agent.close();
        }
        await sleep(1500);
        assert.equal(lastWriterNumber(g.console()), writerAtCrash, 'the writer stays blocked: /data is still frozen');

        const r = spawnSync(process.execPath, [BIN, 'recover', '--config', config], {
          encoding: 'utf8',
          timeout: 120_000,
        });
        assert.equal(r.status, 0, r.stderr + r.stdout);
        assert.match(r.stdout, /^vm \(run \S+\): thawed 1$/m);
        assert.equal(readdirSync(join(stateDir, 'journal')).length, 0);
        t.diagnostic(`${kind}: ${r.stdout.trim()}`);

        const deadline = Date.now() + 60_000;
        while (lastWriterNumber(g.console()) <= writerAtCrash) {
          assert.ok(Date.now() < deadline, 'the writer resumed after the recovery');
          await sleep(100);
        }
        const check = await guestAgent({ kind: 'socket', path: g.qgaSocket });
        try {
          assert.equal(await check.execute('guest-fsfreeze-status'), 'thawed');
        } finally {
          await check.close();
        }
      } finally {
        run.kill('SIGKILL');
      }
    });
  });
}
