import { join } from 'node:path';
import type { AgentContext } from '../context.js';
import { decodeBase64 } from '../file/base64.js';
import { FileTable } from '../file/file-table.js';
import type { Whence } from '../file/guest-file.js';
import { HandleCounter } from '../file/handle-counter.js';
import { QgaError } from '../qapi/errors.js';
import type { ArgSpec, CommandFamily } from '../qapi/types.js';

/** guest-file-read's default count (QGA_READ_COUNT_DEFAULT). */
export const READ_COUNT_DEFAULT = 4096;
/** guest-file-read's largest count (GUEST_FILE_READ_COUNT_MAX, 48 MiB). */
export const READ_COUNT_MAX = 48 * 1024 * 1024;

const HANDLE: ArgSpec = { name: 'handle', type: 'int' };
/** 7.2's GuestFileWhence: an int or one of QGASeek's names (whose values are 0, 1, 2). */
const WHENCE_NAMES = ['set', 'cur', 'end'] as const;

function invalidCount(count: bigint): QgaError {
  return new QgaError(`value '${count}' is invalid for argument count`);
}

/** guest-file-open/close/read/write/seek/flush, with handles from the persistent counter in STATEDIR/qga.state. */
export async function fileCommands(ctx: AgentContext): Promise<CommandFamily> {
  const counter = new HandleCounter(join(ctx.config.statedir, 'qga.state'), (message) =>
    ctx.log({ kind: 'warning', message }),
  );
  const files = new FileTable(counter);
  return {
    commands: [
      {
        name: 'guest-file-open',
        args: [
          { name: 'path', type: 'str' },
          { name: 'mode', type: 'str', optional: true },
        ],
        run: (args) => {
          const path = args['path'] as string;
          const mode = (args['mode'] as string | undefined) ?? 'r';
          ctx.log({ kind: 'info', message: `guest-file-open called, filepath: ${path}, mode: ${mode}` });
          const handle = files.open(path, mode);
          ctx.log({ kind: 'info', message: `guest-file-open, handle: ${handle}` });
          return handle;
        },
      },
      {
        name: 'guest-file-close',
        args: [HANDLE],
        run: (args) => {
          const handle = args['handle'] as bigint;
          ctx.log({ kind: 'info', message: `guest-file-close called, handle: ${handle}` });
          files.close(handle);
        },
      },
      {
        name: 'guest-file-read',
        args: [HANDLE, { name: 'count', type: 'int', optional: true }],
        run: (args) => {
          const file = files.get(args['handle'] as bigint);
          const count = args['count'] as bigint | undefined;
          if (count !== undefined && (count < 0n || count > BigInt(READ_COUNT_MAX))) throw invalidCount(count);
          const { data, eof } = file.read(count === undefined ? READ_COUNT_DEFAULT : Number(count));
          return { count: data.length, 'buf-b64': data.toString('base64'), eof };
        },
      },
      {
        name: 'guest-file-write',
        args: [HANDLE, { name: 'buf-b64', type: 'str' }, { name: 'count', type: 'int', optional: true }],
        run: (args) => {
          const file = files.get(args['handle'] as bigint);
          file.beginWrite();
          const data = decodeBase64(args['buf-b64'] as string);
          const count = args['count'] as bigint | undefined;
          if (count !== undefined && (count < 0n || count > BigInt(data.length))) throw invalidCount(count);
          const written = file.write(data, count === undefined ? data.length : Number(count));
          return { count: written, eof: false };
        },
      },
      {
        name: 'guest-file-seek',
        args: [
          HANDLE,
          { name: 'offset', type: 'int' },
          { name: 'whence', type: { alternate: 'GuestFileWhence', values: WHENCE_NAMES } },
        ],
        run: (args) => {
          const file = files.get(args['handle'] as bigint);
          const whence = args['whence'] as bigint | string;
          const code = typeof whence === 'string' ? BigInt(WHENCE_NAMES.indexOf(whence as 'set')) : whence;
          if (code !== 0n && code !== 1n && code !== 2n) throw new QgaError(`invalid whence code ${code}`);
          // fseek() clears the end-of-file indicator, so eof is always false here.
          return { position: file.seek(args['offset'] as bigint, Number(code) as Whence), eof: false };
        },
      },
      {
        name: 'guest-file-flush',
        args: [HANDLE],
        run: (args) => {
          files.get(args['handle'] as bigint).flush();
        },
      },
    ],
    close: () => files.closeAll(),
  };
}
