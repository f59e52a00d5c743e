import { createServer, type Server, type Socket } from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import type { Agent } from '../agent.js';
import { Session } from '../session.js';
import { socketPeer } from './peer.js';
import type { Transport } from './transport.js';

/**
 * A listening unix socket serving one client at a time, as the reference does
 * (later clients wait their turn). Unlike the reference, a client that resets
 * the connection with replies unread only ends that client, never the agent.
 */
export function unixListen(agent: Agent, path: string): Transport {
  let server: Server | undefined;
  let active: Socket | undefined;
  const waiting: Socket[] = [];

  const serve = (socket: Socket): void => {
    active = socket;
    agent.log({ kind: 'client-connected' });
    const session = new Session(agent, socketPeer(socket));
    socket.on('data', (d: Buffer) => session.feed(d));
    // The client has sent everything (it shut down its side): answer all of it, then close, as the
    // reference does. Without allowHalfOpen Node would end our side at once and drop the replies left.
    socket.on('end', () => void session.idle().then(() => socket.end()));
    socket.on('error', (err) => agent.log({ kind: 'client-gone', reason: err.message }));
    socket.on('close', () => {
      session.close();
      agent.log({ kind: 'client-gone', reason: 'closed' });
      active = undefined;
      let next = waiting.shift();
      while (next?.destroyed) next = waiting.shift();
      if (next) {
        serve(next);
        next.resume();
      }
    });
  };

  return {
    start: () =>
      new Promise<void>((resolve, reject) => {
        removeStaleSocket(path);
        server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
          if (active) {
            socket.on('error', () => undefined);
            waiting.push(socket);
            return;
          }
          serve(socket);
          socket.resume();
        });
        server.once('error', reject);
        server.listen(path, () => {
          server!.off('error', reject);
          resolve();
        });
      }),
    close: async () => {
      for (const s of [active, ...waiting]) s?.destroy();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    },
  };
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Nothing there.
  }
}
