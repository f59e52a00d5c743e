import { open, type FileHandle } from 'node:fs/promises';
import { constants, readSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Agent } from '../agent.js';
import { loadAddon } from '../freeze/ioctl.js';
import { Session, type Peer } from '../session.js';
import type { Transport } from './transport.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long to wait on EOF (no host attached) and between re-opens with -r, as the reference does. */
export const EOF_SLEEP_MS = 100;
export const RETRY_SLEEP_MS = 5000;
/** Without the addon: longest wait between two reads of an idle device (1 ms after data, doubling). */
export const IDLE_POLL_MAX_MS = 50;

const wouldBlock = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'EAGAIN';

/** What DeviceIo returns for EAGAIN. */
const WOULD_BLOCK = -1;

/** Non-blocking reads and writes of the device: a byte count or WOULD_BLOCK; other failures throw. */
interface DeviceIo {
  read(fd: number, buf: Buffer): number;
  write(fd: number, buf: Buffer, off: number, len: number): number;
}

/**
 * The addon's read/write when it is there: fs.readSync reports EAGAIN by
 * throwing, and under emulation building that error costs more than the read.
 */
function deviceIo(): DeviceIo {
  const loaded = loadAddon();
  if ('addon' in loaded) {
    const { addon } = loaded;
    const result = (n: number, syscall: string): number => {
      if (n >= 0) return n;
      if (n === -osConstants.errno.EAGAIN) return WOULD_BLOCK;
      const code = getSystemErrorName(n);
      throw Object.assign(new Error(`${code}: ${addon.strerror(-n)}, ${syscall}`), { code, errno: n, syscall });
    };
    return {
      read: (fd, buf) => result(addon.read(fd, buf), 'read'),
      write: (fd, buf, off, len) => result(addon.write(fd, buf, off, len), 'write'),
    };
  }
  const attempt = (io: () => number): number => {
    try {
      return io();
    } catch (err) {
      if (wouldBlock(err)) return WOULD_BLOCK;
      throw err;
    }
  };
  return {
    read: (fd, buf) => attempt(() => readSync(fd, buf, 0, buf.length, null)),
    write: (fd, buf, off, len) => attempt(() => writeSync(fd, buf, off, len)),
  };
}

/** Waits for a descriptor to have something to read. */
interface Readiness {
  /**
   * Events say when there is more to read (epoll is level-triggered), so a
   * short read goes straight back to waiting. The timer cannot tell: its
   * reader reads again at once, until EAGAIN.
   */
  readonly evented: boolean;
  /** Resolves when the descriptor is readable (or, with the timer, may be). */
  wait(): Promise<void>;
  /** Data arrived: the timer starts again at its shortest period. */
  reset(): void;
  /** Ends the watch; a pending wait() resolves. */
  close(): void;
}

/**
 * Readiness from the addon's libuv poll watch (epoll, as the reference's
 * GLib main loop does), so a request is read the moment it arrives. Without
 * the addon, a timer that backs off from 1 ms to IDLE_POLL_MAX_MS: then a
 * request after an idle spell waits for the timer.
 */
function readiness(fd: number, agent: Agent): Readiness {
  const loaded = loadAddon();
  let why = 'reason' in loaded ? loaded.reason : '';
  if ('addon' in loaded) {
    const { addon } = loaded;
    let wake: (() => void) | undefined;
    const fire = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    try {
      // A status < 0 wakes the reader too: its next read meets the error itself.
      const watch = addon.watch(fd, fire);
      return {
        evented: true,
        wait: () =>
          new Promise<void>((resolve) => {
            wake = resolve;
            addon.arm(watch);
          }),
        reset: () => undefined,
        close: () => {
          addon.unwatch(watch);
          fire();
        },
      };
    } catch (err) {
      why = (err as Error).message;
    }
  }
  agent.log({ kind: 'debug', message: `polling the device on a timer (no readiness events: ${why})` });
  let idle = 0;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  return {
    evented: false,
    wait: () => {
      idle = Math.min(idle * 2 || 1, IDLE_POLL_MAX_MS);
      return new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, idle);
      });
    },
    reset: () => {
      idle = 0;
    },
    close: () => {
      clearTimeout(timer);
      wake?.();
    },
  };
}

/**
 * virtio-serial and isa-serial: a character device kept open. EOF means no
 * host is attached: wait and read again, keeping the device open. With
 * `retry` a device that vanishes or fails is re-opened until it is back.
 *
 * The device is non-blocking and read when epoll says it is readable
 * (readiness(), above): Node has no readiness events of its own for a
 * character device that is not a tty, and a blocking read would sit in
 * libuv's thread pool forever with no host writing, which makes
 * process.exit() hang (it joins the pool) — the agent could not stop on
 * SIGTERM. Reads and writes are non-blocking system calls made directly,
 * without a trip through the thread pool.
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
  let ready: Readiness | undefined;
  const io = deviceIo();

  /** Writes from `off` until done (returns the end) or the device is full (returns where it stopped). */
  const writeSome = (fh: FileHandle, data: Buffer, off: number): number => {
    while (off < data.length && !stopped) {
      const n = io.write(fh.fd, data, off, data.length - off);
      if (n === WOULD_BLOCK) return off;
      off += n;
    }
    return data.length;
  };

  const writeLater = async (fh: FileHandle, data: Buffer, off: number): Promise<void> => {
    // The host is not reading: retry after 1 ms, doubling while nothing goes through.
    let wait = 1;
    while (off < data.length && !stopped) {
      await sleep(wait);
      const next = writeSome(fh, data, off);
      wait = next > off ? 1 : Math.min(wait * 2, IDLE_POLL_MAX_MS);
      off = next;
    }
  };

  const writeFailed = (err: unknown): void => agent.log({ kind: 'write-failed', reason: (err as Error).message });

  const peer = (fh: FileHandle): Peer => ({
    // Synchronous while the device takes the bytes, which is what keeps a thaw's reply in its turn.
    write: (data) => {
      let off: number;
      try {
        off = writeSome(fh, data, 0);
      } catch (err) {
        return writeFailed(err);
      }
      return off < data.length ? writeLater(fh, data, off).catch(writeFailed) : undefined;
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
      const r = readiness(fh.fd, agent);
      ready = r;
      try {
        while (!stopped) {
          if (gate) await gate;
          const bytesRead = io.read(fh.fd, buf);
          if (bytesRead === WOULD_BLOCK) {
            await r.wait();
            continue;
          }
          if (bytesRead === 0) {
            // No host attached: the device reads as EOF (and epoll says readable) until one is.
            await sleep(EOF_SLEEP_MS);
            continue;
          }
          r.reset();
          session.feed(buf.subarray(0, bytesRead));
          // Reading again now would mostly meet EAGAIN: a wasted system call, and with fs.readSync an
          // error built (~0.5 ms in a TCG guest) while the reply to what was just fed waits behind it.
          if (r.evented && bytesRead < buf.length) await r.wait();
        }
      } catch (err) {
        r.close();
        ready = undefined;
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
      ready?.close();
      await handle?.close().catch(() => undefined);
    },
  };
}
