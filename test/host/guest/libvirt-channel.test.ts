// libvirt's agent channel with big commands, against a real libvirtd and a TCG guest (both agents).
// libvirt 9.0 writes an agent command without blocking and, when the socket takes only part of it,
// sends it again from its start: a command above the socket's buffer (~208 KiB) reaches the agent
// garbled, and the agent's later replies come one command off. The connector refuses such a command
// before sending it (COMMAND_TOO_LARGE), writes a file in chunks below the limit intact, and, once a
// channel is garbled anyway (the limit lifted here on purpose), resyncs with guest-sync so that no
// later command takes another's reply; so does a command that timed out while the agent was stopped.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { QuiesceError } from '../../../src/errors.js';
import { LibvirtAgent, MAX_LIBVIRT_COMMAND_BYTES } from '../../../src/guest/connectors/libvirt.js';
import { LibvirtPool } from '../../../src/libvirt/pool.js';
import { haveQemuGa, type AgentKind } from '../../helpers/agents.js';
import {
  defineGuest,
  ensureLibvirtd,
  LIBVIRT_URI,
  libvirtUnavailable,
  type LibvirtGuest,
} from '../../helpers/libvirt.js';

const unavailable = libvirtUnavailable() ?? (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)');
/** Raw bytes per guest-file-write: base64 and the JSON around them stay under the limit. */
const CHUNK = 64 * 1024;

for (const kind of ['qemu-ga', 'quiesce'] as AgentKind[]) {
  describe(`libvirt agent channel, big commands, ${kind}`, { skip: unavailable, timeout: 300_000 }, () => {
    let guest: LibvirtGuest | undefined;
    let pool: LibvirtPool;
    let agent: LibvirtAgent;

    before(async () => {
      await ensureLibvirtd();
      guest = await defineGuest({ agent: kind });
      pool = new LibvirtPool();
      agent = new LibvirtAgent({ uri: LIBVIRT_URI, domain: guest.name }, { pool });
    });
    after(async () => {
      await agent?.close();
      await pool?.closeAll();
      await guest?.destroy();
    });

    test('a 1 MiB guest-file-write is refused before it is sent; 64 KiB chunks write 1 MiB intact', async () => {
      const data = createHash('sha512').update(kind).digest();
      const file = Buffer.concat(
        Array.from({ length: (1 << 20) / data.length }, (_, i) => Buffer.from(data.map((b) => b ^ i))),
      );
      const h = (await agent.execute('guest-file-open', { path: '/tmp/big', mode: 'w' })) as number;
      try {
        const err = await agent
          .execute('guest-file-write', { handle: h, 'buf-b64': file.toString('base64') })
          .catch((e: unknown) => e);
        assert.ok(err instanceof QuiesceError && err.code === 'COMMAND_TOO_LARGE', String(err));
        // Nothing was sent: the channel is in step at once (test/host/guest/libvirt-rpc.test.ts sees no packet).
        assert.equal(await agent.execute('guest-sync', { id: 4711 }), 4711);
        for (let at = 0; at < file.length; at += CHUNK) {
          const chunk = file.subarray(at, at + CHUNK);
          const r = (await agent.execute('guest-file-write', { handle: h, 'buf-b64': chunk.toString('base64') })) as {
            count: number;
          };
          assert.equal(r.count, chunk.length);
        }
      } finally {
        await agent.execute('guest-file-close', { handle: h });
      }
      const r = (await agent.execute('guest-file-open', { path: '/tmp/big', mode: 'r' })) as number;
      const back: Buffer[] = [];
      try {
        for (;;) {
          const c = (await agent.execute('guest-file-read', { handle: r, count: CHUNK })) as {
            'buf-b64': string;
            eof: boolean;
          };
          back.push(Buffer.from(c['buf-b64'], 'base64'));
          if (c.eof || c['buf-b64'] === '') break;
        }
      } finally {
        await agent.execute('guest-file-close', { handle: r });
      }
      assert.ok(Buffer.concat(back).equals(file), 'the file reads back as written');
    });

    if (kind === 'qemu-ga')
      test('a command that times out (the agent stopped for 4 s): its late reply is not taken for the next command', async () => {
        // guest-exec (qemu-ga) stops the agent 0.5 s from now and lets it go on 4 s later.
        await agent.execute('guest-exec', {
          path: '/bin/sh',
          arg: [
            '-c',
            'p=$(cat /run/quiesce-vm/agent.pid); (sleep 0.5; kill -STOP $p; sleep 4; kill -CONT $p) </dev/null >/dev/null 2>&1 &',
          ],
        });
        await new Promise((r) => setTimeout(r, 1500));
        // guest-file-open answers with a number: were it taken late, guest-sync's check would see it.
        const err = await agent
          .execute('guest-file-open', { path: '/tmp/late', mode: 'w' }, { timeoutMs: 1000 })
          .catch((e: unknown) => e);
        assert.ok(err instanceof QuiesceError && err.code === 'TIMEOUT', String(err));
        await new Promise((r) => setTimeout(r, 4000));
        assert.deepEqual(await agent.execute('guest-ping', undefined, { timeoutMs: 10_000 }), {});
        assert.equal(await agent.execute('guest-sync', { id: 4242 }, { timeoutMs: 10_000 }), 4242);
        assert.equal(await agent.execute('guest-fsfreeze-status', undefined, { timeoutMs: 10_000 }), 'thawed');
      });

    test('a garbled channel (the limit lifted): later commands get their own replies, not earlier ones', async () => {
      const raw = new LibvirtAgent(
        { uri: LIBVIRT_URI, domain: guest!.name },
        { pool, maxCommandBytes: Number.MAX_SAFE_INTEGER },
      );
      try {
        const h = (await raw.execute('guest-file-open', { path: '/tmp/garbled', mode: 'w' })) as number;
        const big = Buffer.alloc(4 * MAX_LIBVIRT_COMMAND_BYTES, 0x41).toString('base64');
        // libvirt garbles it: no reply in time, or the agent's parse error, never a clean count.
        const err = await raw
          .execute('guest-file-write', { handle: h, 'buf-b64': big }, { timeoutMs: 5000 })
          .catch((e: unknown) => e);
        assert.ok(err instanceof QuiesceError, `libvirt passed it on intact this time: ${JSON.stringify(err)}`);
        // Whatever the agent still has to say about the garbage is consumed by guest-syncs first.
        for (const id of [7001, 7002]) assert.equal(await raw.execute('guest-sync', { id }, { timeoutMs: 10_000 }), id);
        assert.deepEqual(await raw.execute('guest-ping', undefined, { timeoutMs: 10_000 }), {});
        assert.equal(await raw.execute('guest-fsfreeze-status', undefined, { timeoutMs: 10_000 }), 'thawed');
        const h2 = await raw.execute('guest-file-open', { path: '/tmp/after', mode: 'w' }, { timeoutMs: 10_000 });
        assert.equal(typeof h2, 'number');
        await raw.execute('guest-file-close', { handle: h2 });
      } finally {
        await raw.close();
      }
    });
  });
}
