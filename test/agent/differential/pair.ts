import { haveQemuGa, startAgent, type RunningAgent } from '../../helpers/agents.js';
import { Wire } from '../../helpers/wire.js';

/**
 * Commands neither agent may run on this machine, blocked on both in every
 * differential test as a second line of defence: the suites never send them,
 * but a fuzzer's mutation must not be able to reach them either. (They are
 * compared in rigs of their own: private namespaces with recording stubs.)
 */
export const DANGEROUS_REFERENCE_COMMANDS = [
  'guest-fsfreeze-freeze',
  'guest-fsfreeze-freeze-list',
  'guest-fsfreeze-thaw',
  'guest-fstrim',
  'guest-shutdown',
  'guest-suspend-disk',
  'guest-suspend-ram',
  'guest-suspend-hybrid',
  'guest-set-time',
  'guest-set-vcpus',
  'guest-set-memory-blocks',
  'guest-set-user-password',
  'guest-exec',
  'guest-file-open',
  'guest-file-write',
  'guest-ssh-add-authorized-keys',
  'guest-ssh-remove-authorized-keys',
];

export const SKIP_NO_QEMU_GA = haveQemuGa()
  ? false
  : 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)';

/** The reply lines of one exchange from each agent. */
export interface Replies {
  ours: string[];
  ref: string[];
}

/**
 * quiesce-agent and qemu-ga side by side (unix-listen, temporary state dirs),
 * one connection to each. `exchange` sends the same bytes to both and
 * returns every reply line each gave before its sync reply.
 */
export class AgentPair {
  /** Sync ids far from anything a test or a fuzzer's mutation sends. */
  private syncId = 7_300_000_000_000;

  private constructor(
    readonly ours: RunningAgent,
    readonly ref: RunningAgent,
    private oursWire: Wire,
    private refWire: Wire,
  ) {}

  /** `args` go to both agents; both block the dangerous commands. */
  static async start(args: readonly string[] = []): Promise<AgentPair> {
    // Both sides block what must never run on this machine (a fuzzer's mutation can name any command), and
    // an empty include list means ours could not freeze a filesystem of this machine even if it tried.
    const ours = await startAgent('quiesce', {
      args: [...args, '--fsfreeze-include=', '-b', DANGEROUS_REFERENCE_COMMANDS.join(',')],
    });
    let ref: RunningAgent;
    try {
      ref = await startAgent('qemu-ga', { args: [...args, '-b', DANGEROUS_REFERENCE_COMMANDS.join(',')] });
    } catch (err) {
      await ours.stop();
      throw err;
    }
    try {
      return new AgentPair(ours, ref, await Wire.open(ours.socket), await Wire.open(ref.socket));
    } catch (err) {
      await Promise.all([ours.stop(), ref.stop()]);
      throw err;
    }
  }

  /**
   * Sends `chunks` (each its own write, `gapMs` apart so they arrive as
   * separate reads) and then 0xFF + guest-sync-delimited to both agents.
   * Returns the reply lines before the sync's reply, newline removed, as
   * latin1 text (a leading 0xFF stays visible as \xff).
   */
  async exchange(chunks: Buffer | string | readonly (Buffer | string)[], gapMs = 0): Promise<Replies> {
    const list = Array.isArray(chunks) ? chunks : [chunks as Buffer | string];
    const id = this.syncId++;
    const [ours, ref] = await Promise.all([
      exchangeOn(this.oursWire, list, id, gapMs),
      exchangeOn(this.refWire, list, id, gapMs),
    ]);
    return { ours, ref };
  }

  /** Fresh connections to both agents (the old ones are closed once fully read). */
  async reconnect(): Promise<void> {
    this.oursWire.close();
    this.refWire.close();
    this.oursWire = await Wire.open(this.ours.socket);
    this.refWire = await Wire.open(this.ref.socket);
  }

  /** Both agents are still running. */
  alive(): { ours: boolean; ref: boolean } {
    const up = (a: RunningAgent): boolean => a.child.exitCode === null && a.child.signalCode === null;
    return { ours: up(this.ours), ref: up(this.ref) };
  }

  async stop(): Promise<void> {
    this.oursWire.close();
    this.refWire.close();
    await Promise.all([this.ours.stop(), this.ref.stop()]);
  }
}

async function exchangeOn(
  wire: Wire,
  chunks: readonly (Buffer | string)[],
  id: number,
  gapMs: number,
): Promise<string[]> {
  for (const [i, c] of chunks.entries()) {
    if (i > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    wire.send(c);
  }
  if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
  wire.send(
    Buffer.concat([Buffer.of(0xff), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}`)]),
  );
  const end = `\xff{"return": ${id}}\n`;
  const out = await wire.readUntil(Buffer.from(end, 'latin1'), 15000);
  const text = out.subarray(0, out.length - end.length).toString('latin1');
  return text.split('\n').filter((l) => l !== '');
}

/** The error line for the 0xFF that precedes every sync: the last line of every exchange. */
export const STRAY_FF_LINE = `{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"}}`;
