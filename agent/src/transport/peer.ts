import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { Peer } from '../session.js';

/** A Peer over a socket or any writable: writes resolve when flushed or when the other side is gone. */
export function streamPeer(out: Writable, input: { pause(): unknown; resume(): unknown }): Peer {
  return {
    write: (data) =>
      new Promise<void>((resolve) => {
        if (out.destroyed || out.writableEnded) return resolve();
        out.write(data, () => resolve());
      }),
    pause: () => void input.pause(),
    resume: () => void input.resume(),
  };
}

export function socketPeer(socket: Socket): Peer {
  return streamPeer(socket, socket);
}
