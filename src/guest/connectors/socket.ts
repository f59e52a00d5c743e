import { connect, type Socket } from 'node:net';
import type { SocketAddress } from '../../config/connector.js';
import type { ByteChannel } from '../channel.js';
import { streamChannel } from './stream-channel.js';

/** Opens a channel to an agent's socket. */
export function openSocket(addr: SocketAddress, timeoutMs = 5000): Promise<ByteChannel> {
  return new Promise((resolve, reject) => {
    const socket: Socket = 'path' in addr ? connect(addr.path) : connect(addr.port, addr.host);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(
        streamChannel(socket, socket, async () => {
          socket.destroy();
        }),
      );
    });
  });
}
