import type { AgentContext } from '../context.js';
import { ExecProcess, ExecTable } from '../exec/exec-table.js';
import { startProgram } from '../exec/program.js';
import { decodeBase64 } from '../file/base64.js';
import { QgaError } from '../qapi/errors.js';
import type { CommandFamily } from '../qapi/types.js';

export interface ExecOptions {
  /** Bytes kept of each of stdout and stderr (tests make it small). */
  readonly outputLimit?: number;
}

/**
 * guest-exec-status and guest-exec as qemu-ga 7.2 answers them (registered in
 * that order, after guest-get-memory-block-info). Children run without a
 * shell, are reaped as soon as they end, and their output is drained as it
 * comes; neither command is allowed while frozen.
 */
export function execCommands(ctx: AgentContext, opts: ExecOptions = {}): CommandFamily & { readonly table: ExecTable } {
  const table = new ExecTable();
  return {
    table,
    commands: [
      {
        name: 'guest-exec-status',
        args: [{ name: 'pid', type: 'int' }],
        run: (args) => {
          const pid = args['pid'] as bigint;
          ctx.log({ kind: 'info', message: `guest-exec-status called, pid: ${BigInt.asUintN(32, pid)}` });
          const p = table.find(pid);
          if (!p) throw new QgaError("Invalid parameter 'pid'");
          const reply = p.reply();
          if (reply.exited) table.remove(p);
          return reply;
        },
      },
      {
        name: 'guest-exec',
        args: [
          { name: 'path', type: 'str' },
          { name: 'arg', type: { list: 'str' }, optional: true },
          { name: 'env', type: { list: 'str' }, optional: true },
          { name: 'input-data', type: 'str', optional: true },
          // A bool in 7.2 (the GuestExecCaptureOutput enum came with 8.0).
          { name: 'capture-output', type: 'bool', optional: true },
        ],
        run: async (args) => {
          const path = args['path'] as string;
          const argList = (args['arg'] as string[] | undefined) ?? [];
          const env = args['env'] as string[] | undefined;
          const inputData = args['input-data'] as string | undefined;
          const capture = args['capture-output'] === true;
          // Decoded before anything is logged or started, as the reference does.
          const input = inputData === undefined ? undefined : decodeBase64(inputData);
          ctx.log({ kind: 'info', message: `guest-exec called: "${[path, ...argList].join(' ')}"` });
          const started = await startProgram({
            path,
            args: argList,
            ...(env ? { env } : {}),
            stdin: input ? 'pipe' : 'ignore',
            output: capture ? 'pipe' : 'ignore',
          });
          const p = new ExecProcess(started, input, opts.outputLimit);
          table.add(p);
          return { pid: p.pid };
        },
      },
    ],
    close: () => table.clear(),
  };
}
