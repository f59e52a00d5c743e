import { open, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Agent } from '../agent.js';
import { Session, type Peer } from '../session.js';
import type { Transport } from './transport.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long to wait on EOF (no host attached) and between re-opens with -r, as the reference does. */
export const EOF_SLEEP_MS = 100;
export const RETRY_SLEEP_MS = 5000;
/** Longest wait between two reads of an idle device (polling starts at 1 ms after data and doubles). */
export const IDLE_POLL_MAX_MS = 50;

const wouldBlock = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'EAGAIN';

/**
 * virtio-serial and isa-serial: a character device kept open. EOF means no
 * host is attached: wait and read again, keeping the device open. With
 * `retry` a device that vanishes or fails is re-opened until it is back.
 *
 * The device is non-blocking and polled: Node has no readiness events for a
 * character device that is not a tty, and a blocking read would sit in
 * libuv's thread pool forever with no host writing, which makes
 * process.exit() hang (it joins the pool) — the agent could not stop on
 * SIGTERM.
 */
export function device(
  agent: Agent,
  path: string,
  opts: { serial: boolean; retry: boolean; onFatal: (err: Error) => void },
): Transport {
  let stopped = false;
  let handle: FileHandle | undefined;
  let gate: Promise<void> | undefined;
  let openGate: (() => void) | undefined;

  const peer = (fh: FileHandle): Peer => ({
    write: async (data) => {
      let off = 0;
      let wait = 1;
      while (off < data.length && !stopped) {
        try {
          off += (await fh.write(data, off, data.length - off, null)).bytesWritten;
          wait = 1;
        } catch (err) {
          if (!wouldBlock(err)) {
            agent.log({ kind: 'write-failed', reason: (err as Error).message });
            return;
          }
          await sleep(wait);
          wait = Math.min(wait * 2, IDLE_POLL_MAX_MS);
        }
      }
    },
    pause: () => {
      gate ??= new Promise<void>((r) => (openGate = r));
    },
    resume: () => {
      openGate?.();
      gate = undefined;
    },
  });

  const openDevice = async (): Promise<FileHandle> => {
    const fh = await open(path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
    // The reference puts the serial line in raw mode; stty does the same without native code.
    if (opts.serial) await promisify(execFile)('stty', ['-F', path, 'raw', '-echo', '38400']);
    return fh;
  };

  const loop = async (first: FileHandle | undefined): Promise<void> => {
    let fh: FileHandle | undefined = first;
    const buf = Buffer.alloc(4096);
    while (!stopped) {
      if (!fh) {
        try {
          fh = await openDevice();
        } catch (err) {
          agent.log({ kind: 'channel-waiting', reason: (err as Error).message });
          await sleep(RETRY_SLEEP_MS);
          continue;
        }
      }
      handle = fh;
      const session = new Session(agent, peer(fh));
      try {
        let idle = 0;
        while (!stopped) {
          if (gate) await gate;
          let bytesRead: number;
          try {
            ({ bytesRead } = await fh.read(buf, 0, buf.length, null));
          } catch (err) {
            if (!wouldBlock(err)) throw err;
            idle = Math.min(idle * 2 || 1, IDLE_POLL_MAX_MS);
            await sleep(idle);
            continue;
          }
          if (bytesRead === 0) {
            await sleep(EOF_SLEEP_MS);
            continue;
          }
          idle = 0;
          session.feed(buf.subarray(0, bytesRead));
        }
      } catch (err) {
        session.close();
        await fh.close().catch(() => undefined);
        fh = undefined;
        handle = undefined;
        if (stopped) return;
        if (!opts.retry) return opts.onFatal(err as Error);
        agent.log({ kind: 'channel-waiting', reason: (err as Error).message });
        await sleep(RETRY_SLEEP_MS);
      }
    }
  };

  return {
    start: async () => {
      let fh: FileHandle | undefined;
      try {
        fh = await openDevice();
      } catch (err) {
        if (!opts.retry) throw err;
        agent.log({ kind: 'channel-waiting', reason: (err as Error).message });
      }
      void loop(fh);
    },
    close: async () => {
      stopped = true;
      openGate?.();
      await handle?.close().catch(() => undefined);
    },
  };
}
