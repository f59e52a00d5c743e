import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import { Wire } from '../../helpers/wire.js';
import { waitFor } from './processes.js';

const PING = '{"execute":"guest-ping"}';
const PONG = '{"return": {}}';
const NO_QEMU_GA = haveQemuGa()
  ? false
  : 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)';

/** A client that never reads: whatever the agent answers stays unread in its socket. */
async function deafClient(path: string): Promise<Socket> {
  const s = connect(path);
  s.pause();
  s.on('error', () => undefined);
  await once(s, 'connect');
  return s;
}

const running = (a: RunningAgent): boolean => a.child.exitCode === null && a.child.signalCode === null;

describe('unix-listen', () => {
  const agents: RunningAgent[] = [];
  const wires: Wire[] = [];
  after(async () => {
    for (const w of wires) w.close();
    await Promise.all(agents.map((a) => a.stop()));
  });
  const start = async (kind: AgentKind): Promise<RunningAgent> => {
    const a = await startAgent(kind);
    agents.push(a);
    return a;
  };
  const open = async (a: RunningAgent): Promise<Wire> => {
    const w = await Wire.open(a.socket);
    wires.push(w);
    return w;
  };

  test(
    'a client that closes with replies unread ends only that client: the next one is answered',
    { timeout: 30_000 },
    async () => {
      const ours = await start('quiesce');
      // A few replies left unread, then lots: the agent is then blocked writing when the client goes.
      for (const n of [200, 50_000]) {
        const deaf = await deafClient(ours.socket);
        deaf.write(PING.repeat(n));
        await new Promise((r) => setTimeout(r, 300));
        deaf.destroy();
        await new Promise((r) => setTimeout(r, 200));
        assert.ok(running(ours), `quiesce-agent still runs after a client left ${n} replies unread`);
        const next = await open(ours);
        assert.deepEqual(await next.exchange(PING), [
          PONG,
          `{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"}}`,
        ]);
        next.close();
      }
    },
  );

  test(
    'documents the difference: qemu-ga 7.2 exits when a client closes with replies unread',
    { skip: NO_QEMU_GA, timeout: 15_000 },
    async () => {
      const ref = await start('qemu-ga');
      const deaf = await deafClient(ref.socket);
      deaf.write(PING.repeat(200));
      await new Promise((r) => setTimeout(r, 300));
      deaf.destroy();
      await waitFor(() => !running(ref), 'qemu-ga to exit', 5000);
    },
  );

  for (const kind of ['quiesce', 'qemu-ga'] as const) {
    test(
      `${kind}: serves one client at a time; the second is answered once the first closes`,
      {
        skip: kind === 'qemu-ga' ? NO_QEMU_GA : false,
        timeout: 15_000,
      },
      async () => {
        const agent = await start(kind);
        const first = await open(agent);
        assert.deepEqual((await first.exchange(PING))[0], PONG);
        const second = await open(agent);
        second.send('{"execute":"guest-sync","arguments":{"id":2}}');
        await assert.rejects(second.readUntil(Buffer.from('\n'), 500), /timeout/);
        // The first client is still served meanwhile.
        assert.deepEqual((await first.exchange('{"execute":"guest-sync","arguments":{"id":1}}'))[0], '{"return": 1}');
        first.close();
        assert.equal((await second.readUntil(Buffer.from('\n'), 5000)).toString(), '{"return": 2}\n');
      },
    );
  }

  for (const kind of ['quiesce', 'qemu-ga'] as const) {
    test(
      `${kind}: a client that sends 3000 requests and shuts down its side gets every reply, then the close`,
      {
        skip: kind === 'qemu-ga' ? NO_QEMU_GA : false,
        timeout: 15_000,
      },
      async () => {
        const agent = await start(kind);
        const s = connect({ path: agent.socket, allowHalfOpen: true });
        s.on('error', () => undefined);
        await once(s, 'connect');
        let got = '';
        s.setEncoding('latin1');
        s.on('data', (d: string) => (got += d));
        const closed = once(s, 'close');
        s.end(PING.repeat(3000));
        await closed;
        assert.equal(got, `${PONG}\n`.repeat(3000));
      },
    );
  }

  test(
    'a new client starts with a fresh parser (a half request of the previous client is gone)',
    { timeout: 15_000 },
    async () => {
      const ours = await start('quiesce');
      const first = await open(ours);
      first.send('{"execute":"guest-sync","arguments":{"id":');
      await new Promise((r) => setTimeout(r, 100));
      first.close();
      const second = await open(ours);
      const lines = await second.exchange('77}}');
      assert.deepEqual(lines.slice(0, -1), [
        '{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}',
        '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}',
        '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}',
      ]);
    },
  );

  test(
    'documents the difference: qemu-ga keeps a half request across clients',
    { skip: NO_QEMU_GA, timeout: 15_000 },
    async () => {
      const ref = await start('qemu-ga');
      const first = await open(ref);
      first.send('{"execute":"guest-sync","arguments":{"id":');
      await new Promise((r) => setTimeout(r, 100));
      first.close();
      const second = await open(ref);
      const lines = await second.exchange('77}}');
      assert.equal(lines[0], '{"return": 77}');
    },
  );

  test(
    'a client that resets while its command is queued does not get the agent stuck',
    { timeout: 15_000 },
    async () => {
      const ours = await start('quiesce');
      for (let i = 0; i < 20; i++) {
        const c = await deafClient(ours.socket);
        c.write(`${PING.repeat(10)}{"execute":"guest-sy`);
        c.destroy();
      }
      const w = await open(ours);
      assert.equal((await w.exchange(PING))[0], PONG);
    },
  );
});
