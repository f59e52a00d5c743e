/**
 * N agents in unix-listen mode that freeze nothing, in one process: each
 * socket answers the protocol (sync, ping, info, fsinfo, freeze-list → the
 * count asked for, thaw, status) through quiesce-agent's own protocol module.
 * Used by the fleet benchmark to measure the host, not the guests.
 * argv: DIR COUNT. Prints "ready" once every socket listens.
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { encodeResponse, isQDict, JsonStreamer, SENTINEL, type QObject } from 'quiesce-agent/protocol';

const [dir, countText] = process.argv.slice(2);
const count = Number(countText);
const COMMANDS = [
  'guest-sync-delimited',
  'guest-sync',
  'guest-ping',
  'guest-info',
  'guest-fsfreeze-status',
  'guest-fsfreeze-freeze-list',
  'guest-fsfreeze-thaw',
  'guest-get-fsinfo',
];

function answer(
  req: QObject,
  state: { frozen: number },
): { body: Parameters<typeof encodeResponse>[0]; delimited: boolean } {
  const r = isQDict(req) ? req : new Map<string, QObject>();
  const cmd = r.get('execute');
  const args = r.get('arguments');
  const arg = (k: string) => (isQDict(args ?? null) ? (args as Map<string, QObject>).get(k) : undefined);
  switch (cmd) {
    case 'guest-sync-delimited':
      return { body: { return: arg('id') ?? null }, delimited: true };
    case 'guest-sync':
      return { body: { return: arg('id') ?? null }, delimited: false };
    case 'guest-ping':
      return { body: { return: {} }, delimited: false };
    case 'guest-info':
      return {
        body: {
          return: {
            version: 'null-agent',
            supported_commands: COMMANDS.map((name) => ({ enabled: true, name, 'success-response': true })),
          },
        },
        delimited: false,
      };
    case 'guest-fsfreeze-status':
      return { body: { return: state.frozen ? 'frozen' : 'thawed' }, delimited: false };
    case 'guest-fsfreeze-freeze-list': {
      const list = arg('mountpoints');
      state.frozen = Array.isArray(list) ? list.length : 1;
      return { body: { return: state.frozen }, delimited: false };
    }
    case 'guest-fsfreeze-thaw': {
      const n = state.frozen;
      state.frozen = 0;
      return { body: { return: n }, delimited: false };
    }
    case 'guest-get-fsinfo':
      return { body: { return: [{ name: 'vda1', mountpoint: '/data', type: 'ext4', disk: [] }] }, delimited: false };
    default:
      return {
        body: { error: { class: 'CommandNotFound', desc: `The command ${String(cmd)} has not been found` } },
        delimited: false,
      };
  }
}

let listening = 0;
for (let i = 0; i < count; i++) {
  const state = { frozen: 0 };
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    const streamer = new JsonStreamer((m) => {
      if (!m.ok) {
        socket.write(encodeResponse({ error: { class: 'GenericError', desc: m.error } }, undefined));
        return;
      }
      const { body, delimited } = answer(m.value, state);
      const line = encodeResponse(body, isQDict(m.value) ? m.value.get('id') : undefined);
      socket.write(delimited ? Buffer.concat([Buffer.of(SENTINEL), Buffer.from(line)]) : line);
    });
    socket.on('data', (d: Buffer) => streamer.feed(d));
  });
  server.listen(join(dir!, `agent-${i}.sock`), () => {
    if (++listening === count) process.stdout.write('ready\n');
  });
}
