import type { ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { Writable } from 'node:stream';
import type { JsonOut } from '../protocol/index.js';
import { OutputCapture } from './capture.js';
import type { StartedProgram } from './program.js';

/** How a child ended, from its wait status. */
export type ExitStatus = { readonly exitcode: number } | { readonly signal: number };

/** guest-exec-status's reply: QAPI GuestExecStatus (the encoder puts the members in the reference's order). */
export interface ExecStatusReply {
  readonly [key: string]: JsonOut;
  readonly exited: boolean;
  readonly exitcode?: number | undefined;
  readonly signal?: number | undefined;
  readonly 'out-data'?: string | undefined;
  readonly 'err-data'?: string | undefined;
  readonly 'out-truncated'?: boolean | undefined;
  readonly 'err-truncated'?: boolean | undefined;
}

function signalNumber(name: NodeJS.Signals): number {
  return (constants.signals as Record<string, number | undefined>)[name] ?? 0;
}

/**
 * One child started by guest-exec: reaped by Node as soon as it ends (no
 * zombie, whether or not anyone asks), its output read as it comes.
 */
export class ExecProcess {
  private status: ExitStatus | undefined;
  private readonly out: OutputCapture | undefined;
  private readonly err: OutputCapture | undefined;
  private readonly stdin: Writable | undefined;
  readonly child: ChildProcess;

  constructor(started: StartedProgram, input: Buffer | undefined, limit?: number) {
    const child = (this.child = started.child);
    child.once('exit', (code, signal) => {
      this.status = signal !== null ? { signal: signalNumber(signal) } : { exitcode: code ?? 0 };
    });
    // Spawn errors were handled before this object exists; a later one (kill failing) is nothing to report.
    child.on('error', () => undefined);
    if (started.stdout && started.stderr) {
      this.out = new OutputCapture(started.stdout, limit);
      this.err = new OutputCapture(started.stderr, limit);
    }
    this.stdin = started.stdin;
    if (this.stdin) {
      const stdin = this.stdin;
      // The child may exit without reading it all (EPIPE): the reference only warns.
      stdin.on('error', () => undefined);
      // Closed once written, so the child sees end of file.
      if (input && input.length > 0) stdin.write(input, () => stdin.destroy());
      else stdin.destroy();
    }
  }

  get pid(): number {
    return this.child.pid!;
  }

  /**
   * Ended, and when output is captured both pipes closed too, so that all of
   * it is in: a grandchild holding a pipe keeps the reply at `exited: false`.
   */
  exited(): boolean {
    if (!this.status) return false;
    return !this.out || (this.out.closed && this.err!.closed);
  }

  /** The reply for guest-exec-status: data (base64) only when there is some, each with its truncated flag. */
  reply(): ExecStatusReply {
    if (!this.exited()) return { exited: false };
    const stream = (c: OutputCapture | undefined) =>
      c && c.length > 0 ? { data: c.data().toString('base64'), truncated: c.truncated } : undefined;
    const out = stream(this.out);
    const err = stream(this.err);
    return {
      exited: true,
      ...this.status,
      'out-data': out?.data,
      'err-data': err?.data,
      'out-truncated': out?.truncated,
      'err-truncated': err?.truncated,
    };
  }

  /** Lets go of the child: stops reading its output and no longer keeps the event loop alive for it. */
  release(): void {
    this.out?.destroy();
    this.err?.destroy();
    this.stdin?.destroy();
    this.child.unref();
  }
}

/**
 * The children guest-exec started, by pid, until a status call reports one
 * exited (then it is forgotten, as in the reference). A pid the kernel gave
 * out again while an older entry is unclaimed finds the older one first.
 */
export class ExecTable {
  private readonly byPid = new Map<number, ExecProcess[]>();

  add(p: ExecProcess): void {
    const list = this.byPid.get(p.pid);
    if (list) list.push(p);
    else this.byPid.set(p.pid, [p]);
  }

  find(pid: bigint): ExecProcess | undefined {
    if (pid < 0n || pid > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    return this.byPid.get(Number(pid))?.[0];
  }

  remove(p: ExecProcess): void {
    const list = this.byPid.get(p.pid);
    if (!list) return;
    const rest = list.filter((q) => q !== p);
    if (rest.length > 0) this.byPid.set(p.pid, rest);
    else this.byPid.delete(p.pid);
  }

  get size(): number {
    let n = 0;
    for (const list of this.byPid.values()) n += list.length;
    return n;
  }

  /** Every entry released and forgotten (the agent is stopping; the children go on). */
  clear(): void {
    for (const list of this.byPid.values()) for (const p of list) p.release();
    this.byPid.clear();
  }
}
