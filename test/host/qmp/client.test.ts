import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { QuiesceError } from '../../../src/errors.js';
import { QmpClient, QmpError } from '../../../src/qmp/client.js';
import { FakeQmp, type FakeQmpConnection, type FakeQmpRequest } from '../../helpers/fake-qmp.js';

describe('QMP client (against a scripted QMP server)', () => {
  let fake: FakeQmp | undefined;
  let client: QmpClient | undefined;
  afterEach(async () => {
    client?.close();
    client = undefined;
    await fake?.stop();
    fake = undefined;
  });

  test('reads the greeting, sends qmp_capabilities first, then commands with ids', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'query-status') c.reply(req, { status: 'running', running: true });
    });
    client = await QmpClient.connect(fake.path);
    assert.deepEqual((client.greeting['version'] as { package: string }).package, 'fake');
    assert.deepEqual(await client.execute('query-status'), { status: 'running', running: true });
    assert.deepEqual(fake.commands(), ['qmp_capabilities', 'query-status']);
    const ids = fake.requests.map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length, 'every request has its own id');
  });

  test('replies are matched by id, whatever their order, with events interleaved', async () => {
    const held: [FakeQmpRequest, FakeQmpConnection][] = [];
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'a' || req.execute === 'b') held.push([req, c]);
      if (held.length === 2) {
        const [ra, c1] = held[0]!;
        const [rb] = held[1]!;
        c1.event('JOB_STATUS_CHANGE', { id: 'j', status: 'running' });
        c1.reply(rb, 'B');
        c1.event('BLOCK_JOB_COMPLETED', { device: 'j', len: 1, offset: 1 });
        c1.reply(ra, 'A');
      }
    });
    client = await QmpClient.connect(fake.path);
    const seen: string[] = [];
    client.onEvent((e) => seen.push(e.event));
    const [a, b] = await Promise.all([client.execute('a'), client.execute('b')]);
    assert.deepEqual([a, b], ['A', 'B']);
    assert.deepEqual(seen, ['JOB_STATUS_CHANGE', 'BLOCK_JOB_COMPLETED']);
  });

  test('a command encoded ahead (prepareCommand) is sent once by send() and answered like execute()', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'transaction') c.reply(req, { took: (req.arguments!['actions'] as unknown[]).length });
      if (req.execute === 'query-status') c.reply(req, 'running');
    });
    client = await QmpClient.connect(fake.path);
    const prepared = client.prepareCommand('transaction', { actions: [{ type: 'x' }, { type: 'y' }] });
    // Other commands may run in between; the reserved id stays unique.
    assert.equal(await client.execute('query-status'), 'running');
    assert.deepEqual(await client.send(prepared), { took: 2 });
    await assert.rejects(client.send(prepared), /was sent already/);
    const ids = fake.requests.map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length);
  });

  test('an error reply is a QmpError with class and description (code QMP_ERROR)', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'blockdev-del') c.error(req, "Failed to find node with node-name='x'", 'DeviceNotFound');
    });
    client = await QmpClient.connect(fake.path, { guest: 'vm1' });
    await assert.rejects(client.execute('blockdev-del', { 'node-name': 'x' }), (err: unknown) => {
      assert.ok(err instanceof QmpError);
      assert.equal(err.code, 'QMP_ERROR');
      assert.equal(err.errorClass, 'DeviceNotFound');
      assert.equal(err.guest, 'vm1');
      assert.match(err.message, /QMP blockdev-del: Failed to find node with node-name='x' \(DeviceNotFound\)/);
      return true;
    });
    // The connection is still usable.
    fake.setHandler((req, c) => c.reply(req, 42));
    assert.equal(await client.execute('anything'), 42);
  });

  test('waitForEvent sees an event that arrived before the wait when given `since`, and times out otherwise', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'go') {
        c.event('BLOCK_JOB_COMPLETED', { device: 'job1', len: 10, offset: 10 });
        c.reply(req, {});
      }
    });
    client = await QmpClient.connect(fake.path);
    const since = client.lastEventSeq();
    await client.execute('go');
    const e = await client.waitForEvent((x) => x.event === 'BLOCK_JOB_COMPLETED' && x.data['device'] === 'job1', {
      since,
      timeoutMs: 1000,
    });
    assert.equal(e.data['len'], 10);
    await assert.rejects(
      client.waitForEvent((x) => x.event === 'BLOCK_JOB_COMPLETED', { timeoutMs: 100, what: 'the copy' }),
      (err: unknown) =>
        err instanceof QuiesceError && err.code === 'TIMEOUT' && /no the copy within 100 ms/.test(err.message),
    );
  });

  test('a command without a reply times out; its late reply is dropped and the next command still works', async () => {
    let late: (() => void) | undefined;
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'slow') late = () => c.reply(req, 'late');
      if (req.execute === 'fast') {
        late?.();
        c.reply(req, 'fast');
      }
    });
    client = await QmpClient.connect(fake.path);
    const t0 = performance.now();
    await assert.rejects(
      client.execute('slow', undefined, { timeoutMs: 150 }),
      (err: unknown) =>
        err instanceof QuiesceError && err.code === 'TIMEOUT' && /no reply to slow within 150 ms/.test(err.message),
    );
    assert.ok(performance.now() - t0 < 1000);
    assert.equal(await client.execute('fast'), 'fast');
  });

  test('an aborted signal ends the wait at once', async () => {
    fake = await FakeQmp.start(() => undefined);
    client = await QmpClient.connect(fake.path);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('budget')), 50);
    await assert.rejects(
      client.execute('transaction', { actions: [] }, { signal: ac.signal, timeoutMs: 10_000 }),
      /transaction aborted/,
    );
  });

  test('a message over the cap closes the connection (REPLY_TOO_LARGE) and fails what is pending', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'huge') c.raw(`{"return": "${'x'.repeat(300_000)}`);
    });
    client = await QmpClient.connect(fake.path, { maxMessageBytes: 100_000 });
    await assert.rejects(
      client.execute('huge'),
      (err: unknown) => err instanceof QuiesceError && err.code === 'REPLY_TOO_LARGE',
    );
    assert.equal(client.closed, true);
    await assert.rejects(client.execute('query-status'), /exceeded 100000 bytes/);
  });

  test('QEMU closing the socket fails pending commands and event waits (CHANNEL_GONE)', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'quit') setTimeout(() => c.socket.destroy(), 20);
    });
    client = await QmpClient.connect(fake.path);
    const wait = client.waitForEvent((e) => e.event === 'SHUTDOWN', { timeoutMs: 5000 });
    await assert.rejects(
      client.execute('quit'),
      (err: unknown) => err instanceof QuiesceError && err.code === 'CHANNEL_GONE',
    );
    await assert.rejects(wait, /connection closed by QEMU/);
  });

  test('no greeting (another client holds the monitor): CONNECT_FAILED naming the likely cause', async () => {
    fake = await FakeQmp.start(() => undefined, { greet: false });
    await assert.rejects(
      QmpClient.connect(fake.path, { connectTimeoutMs: 200 }),
      (err: unknown) =>
        err instanceof QuiesceError &&
        err.code === 'CONNECT_FAILED' &&
        /one monitor client at a time/.test(err.message),
    );
  });

  test('a missing socket: CONNECT_FAILED with the path', async () => {
    await assert.rejects(
      QmpClient.connect('/nonexistent/qmp.sock'),
      (err: unknown) =>
        err instanceof QuiesceError &&
        err.code === 'CONNECT_FAILED' &&
        /qmp:\/nonexistent\/qmp\.sock/.test(err.message),
    );
  });

  test('garbage from the server ends the connection (OUT_OF_SYNC): QMP has no way to resync', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'x') c.raw('}\n');
    });
    client = await QmpClient.connect(fake.path);
    await assert.rejects(
      client.execute('x'),
      (err: unknown) => err instanceof QuiesceError && err.code === 'OUT_OF_SYNC',
    );
  });

  test('a monitor with pretty=on (a message over several lines) is refused, saying so', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'query-status')
        c.raw(
          `{\r\n    "return": {\r\n        "status": "running"\r\n    },\r\n    "id": ${JSON.stringify(req.id)}\r\n}\r\n`,
        );
    });
    client = await QmpClient.connect(fake.path);
    await assert.rejects(
      client.execute('query-status'),
      (err: unknown) => err instanceof QuiesceError && err.code === 'OUT_OF_SYNC' && /pretty=on/.test(err.message),
    );
  });

  test('messages split anywhere across reads, and several in one read, are all read', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute !== 'burst') return;
      const lines =
        `{"event": "JOB_STATUS_CHANGE", "data": {"status": "created", "id": "j"}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n` +
        `{"event": "JOB_STATUS_CHANGE", "data": {"status": "running", "id": "j"}, "timestamp": {"seconds": 1, "microseconds": 3}}\r\n` +
        `{"return": {"n": "é"}, "id": ${JSON.stringify(req.id)}}\r\n`;
      const bytes = Buffer.from(lines);
      // One byte, then a cut inside the é, then the rest with two messages in one write.
      const cuts = [1, bytes.indexOf(Buffer.from('é')) + 1, bytes.length];
      let at = 0;
      for (const cut of cuts) {
        const part = bytes.subarray(at, cut);
        at = cut;
        setTimeout(() => c.socket.write(part), 5 * cuts.indexOf(cut));
      }
    });
    client = await QmpClient.connect(fake.path);
    const seen: string[] = [];
    client.onEvent((e) => seen.push(String(e.data['status'])));
    assert.deepEqual(await client.execute('burst'), { n: 'é' });
    assert.deepEqual(seen, ['created', 'running']);
  });

  test('big integers and nested values come back as plain JS values', async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'query-block')
        c.raw(
          `{"return": [{"inserted": {"image": {"virtual-size": 68719476736}}}], "id": ${JSON.stringify(req.id)}}\r\n`,
        );
    });
    client = await QmpClient.connect(fake.path);
    assert.deepEqual(await client.execute('query-block'), [{ inserted: { image: { 'virtual-size': 68719476736 } } }]);
  });
});
