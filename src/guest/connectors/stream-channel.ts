import type { Readable, Writable } from 'node:stream';
import type { ByteChannel } from '../channel.js';

/** A ByteChannel over a readable and a writable side (a socket is both). */
export function streamChannel(input: Readable, output: Writable, close: () => Promise<void>): ByteChannel {
  let closed = false;
  const closeListeners: ((err?: Error) => void)[] = [];
  const ended = (err?: Error): void => {
    if (closed) return;
    closed = true;
    for (const l of closeListeners) l(err);
  };
  input.on('error', ended);
  output.on('error', ended);
  input.on('close', () => ended());
  input.on('end', () => ended());
  return {
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        if (closed || output.destroyed) return reject(new Error('channel closed'));
        output.write(data, (err) => (err ? reject(err) : resolve()));
      }),
    onData: (listener) => void input.on('data', listener),
    onClose: (listener) => void closeListeners.push(listener),
    close: async () => {
      closed = true;
      await close();
    },
  };
}
