import type { Agent } from '../agent.js';
import { Session } from '../session.js';
import { streamPeer } from './peer.js';
import type { Transport } from './transport.js';

/** The host tool's local mode: requests on stdin, replies on stdout; EOF on stdin stops the agent. */
export function stdio(agent: Agent, onEnd: () => void): Transport {
  const session = new Session(agent, streamPeer(process.stdout, process.stdin));
  return {
    start: async () => {
      process.stdin.on('data', (d: Buffer) => session.feed(d));
      process.stdin.on('end', () => {
        void session.idle().then(onEnd);
      });
      process.stdout.on('error', () => undefined);
    },
    close: async () => {
      session.close();
      process.stdin.pause();
    },
  };
}
