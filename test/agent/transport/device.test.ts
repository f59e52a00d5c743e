import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { spawnAgentBundle, startPtyRelay, tempDir, waitFor, type Proc, type PtyRelay } from './processes.js';

const SYNC = (id: number): Buffer =>
  Buffer.concat([Buffer.of(0xff), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}`)]);

/** Sends 0xFF + guest-sync-delimited until the 0xFF-prefixed reply with that id comes back. */
async function syncOver(relay: PtyRelay, id: number, timeoutMs: number): Promise<string> {
  const want = `\xff{"return": ${id}}\n`;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    relay.send(SYNC(id));
    const until = Date.now() + 500;
    while (Date.now() < until) {
      const got = relay.received().toString('latin1');
      if (got.includes(want)) return got;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  throw new Error(`no sync reply over the pty; got ${JSON.stringify(relay.received().toString('latin1'))}`);
}

describe('device transports over a pseudo-terminal', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  const track = <T extends Proc | PtyRelay>(p: T): T => {
    cleanups.push(() => p.stop());
    return p;
  };

  // Readiness comes from the addon's epoll watch; without the addon, from a timer that backs off.
  const readiness = [
    { how: 'epoll watch', env: {}, timer: false },
    { how: 'timer (no addon)', env: { QUIESCE_AGENT_NO_ADDON: '1' }, timer: true },
  ];
  for (const { how, env, timer } of readiness)
    for (const method of ['virtio-serial', 'isa-serial'] as const) {
      test(`${method}, ${how}: answers requests on the device and stops on SIGTERM`, { timeout: 20_000 }, async () => {
        const relay = track(await startPtyRelay());
        const dir = tempDir('quiesce-dev-');
        cleanups.push(() => dir.remove());
        const agent = track(spawnAgentBundle(['-v', '-m', method, '-p', relay.slave, '-t', dir.path], env));
        const seen = await syncOver(relay, 4242, 8000);
        assert.ok(seen.endsWith('\xff{"return": 4242}\n'));
        relay.send('{"execute":"guest-ping","id":"dev"}{"execute":"guest-nope"}');
        await waitFor(() => relay.received().toString('latin1').includes('not been found'), 'the replies', 5000);
        const text = relay.received().toString('latin1');
        assert.ok(
          text.includes(
            '{"return": {}, "id": "dev"}\n{"error": {"class": "CommandNotFound", "desc": "The command guest-nope has not been found"}}\n',
          ),
        );
        // A request after an idle spell is read too (the watch is armed again after every read).
        await new Promise((r) => setTimeout(r, 300));
        relay.send('{"execute":"guest-ping","id":"idle"}');
        await waitFor(
          () => relay.received().toString('latin1').includes('"id": "idle"'),
          'the reply after idling',
          5000,
        );
        assert.equal(/polling the device on a timer/.test(agent.stderr()), timer, agent.stderr());
        const t0 = Date.now();
        agent.child.kill('SIGTERM');
        assert.equal(await agent.exited, 0);
        assert.ok(Date.now() - t0 < 2500, `stopped in ${Date.now() - t0} ms, not after the SIGKILL fallback`);
      });
    }

  test('-r: a device path missing at start is waited for and served once it appears', { timeout: 30_000 }, async () => {
    const relay = track(await startPtyRelay());
    const dir = tempDir('quiesce-retry-');
    cleanups.push(() => dir.remove());
    const link = join(dir.path, 'org.qemu.guest_agent.0');
    const agent = track(spawnAgentBundle(['-m', 'virtio-serial', '-p', link, '-t', dir.path, '-r']));
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(agent.running(), `the agent waits for the device: ${agent.stderr()}`);
    symlinkSync(relay.slave, link);
    // The reference retries every 5 s; so do we.
    await syncOver(relay, 77, 12_000);
    // Every sync sent is answered as the reference answers it: the 0xFF with a stray error, then the reply.
    const stray = `{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"}}`;
    const lines = relay.received().toString('latin1').split('\n').slice(0, -1);
    assert.ok(lines.includes('\xff{"return": 77}'));
    for (const line of lines) assert.ok(line === stray || line === '\xff{"return": 77}', line);
  });

  test('without -r a missing device path stops the agent with one line and status 1', { timeout: 10_000 }, async () => {
    const dir = tempDir('quiesce-noretry-');
    cleanups.push(() => dir.remove());
    const agent = track(spawnAgentBundle(['-m', 'virtio-serial', '-p', join(dir.path, 'missing'), '-t', dir.path]));
    assert.equal(await agent.exited, 1);
    assert.match(agent.stderr(), /failed to open channel .*missing.*no such file or directory/i);
  });

  test('vsock-listen is refused with a message and status 2', { timeout: 10_000 }, async () => {
    const dir = tempDir('quiesce-vsock-');
    cleanups.push(() => dir.remove());
    const agent = track(spawnAgentBundle(['-m', 'vsock-listen', '-p', '3:1234', '-t', dir.path]));
    assert.equal(await agent.exited, 2);
    assert.equal(agent.stderr(), 'quiesce-agent: vsock-listen is not supported: Node.js has no AF_VSOCK sockets\n');
  });
});
