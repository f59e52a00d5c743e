import { QuiesceError } from '../errors.js';
import { hasWatchdog, isEnabled, parseCapabilities, type Capabilities } from '../guest/capabilities.js';
import type { GuestAgent } from '../guest/types.js';

/** What a preflight found out about a guest's agent, and what stands in the way of a freeze. */
export interface PreflightResult {
  readonly caps: Capabilities;
  /** guest-fsfreeze-status, when the agent has it enabled. */
  readonly status: string | undefined;
  /** The freeze commands this guest needs that the agent lacks or has disabled. */
  readonly missingCommands: readonly string[];
  readonly watchdog: boolean;
  /** Mountpoints the agent reports (guest-get-fsinfo), when it has the command. */
  readonly mountpoints: readonly string[] | undefined;
  /** Listed mountpoints the guest does not have (the reference silently skips them when freezing). */
  readonly notMounted: readonly string[];
  /** Every reason not to freeze, most telling first (already frozen is the real news); empty when clear. */
  readonly problems: readonly QuiesceError[];
}

/** The preflight's questions, once asked: guest-info, and what was asked with it. */
export interface PreflightQuestions {
  readonly info: Promise<unknown>;
  /** guest-fsfreeze-status and guest-get-fsinfo, asked with guest-info when the agent takes concurrent commands. */
  readonly ahead: ReadonlyMap<string, Promise<unknown>> | undefined;
}

/**
 * Asks guest-info (under `infoTimeoutMs`: a run's connect step asks it first, under the connect timeout)
 * and, of an agent that takes concurrent commands, the freeze status and the filesystems at once: they
 * only read, and libvirt then has them queued behind guest-info instead of waiting for this process to
 * handle its reply. Answers of commands guest-info shows disabled are dropped. Other agents are asked one
 * by one, as needed.
 */
export function askPreflight(
  agent: GuestAgent,
  o: { readonly timeoutMs: number; readonly infoTimeoutMs?: number },
): PreflightQuestions {
  const info = read(agent, 'guest-info', o.infoTimeoutMs ?? o.timeoutMs);
  const ahead = agent.concurrent
    ? new Map(['guest-fsfreeze-status', 'guest-get-fsinfo'].map((c) => [c, early(read(agent, c, o.timeoutMs))]))
    : undefined;
  return { info, ahead };
}

/**
 * The checks before a freeze, shared by `run`/`freeze` (which stop at the
 * first problem) and `doctor` (which shows them all): the agent's commands,
 * its freeze status and the listed mountpoints. A run's connect step has
 * asked the questions already (`asked`).
 */
export async function preflight(
  agent: GuestAgent,
  o: { readonly guest: string; readonly freeze: 'all' | readonly string[]; readonly timeoutMs: number },
  asked: PreflightQuestions = askPreflight(agent, o),
): Promise<PreflightResult> {
  const { info, ahead } = asked;
  const ask = (command: string): Promise<unknown> => ahead?.get(command) ?? read(agent, command, o.timeoutMs);
  const caps = parseCapabilities(await info);
  const problems: QuiesceError[] = [];
  // Status first: a frozen agent disables the freeze commands, and "already frozen" is the real news.
  const status = isEnabled(caps, 'guest-fsfreeze-status') ? String(await ask('guest-fsfreeze-status')) : undefined;
  if (status !== undefined && status !== 'thawed') {
    problems.push(
      new QuiesceError(
        'ALREADY_FROZEN',
        `the guest is already frozen (status ${status}): another tool or a crashed run froze it; see 'quiesce recover'`,
        { guest: o.guest },
      ),
    );
  }
  const needed = [
    o.freeze === 'all' ? 'guest-fsfreeze-freeze' : 'guest-fsfreeze-freeze-list',
    'guest-fsfreeze-thaw',
    'guest-fsfreeze-status',
  ];
  const missingCommands = needed.filter((c) => !isEnabled(caps, c));
  for (const c of missingCommands) {
    problems.push(
      new QuiesceError(
        'COMMAND_UNAVAILABLE',
        `the agent (${caps.version}) has ${caps.commands.has(c) ? 'disabled' : 'no'} ${c}`,
        { guest: o.guest },
      ),
    );
  }
  let mountpoints: string[] | undefined;
  let notMounted: string[] = [];
  if (isEnabled(caps, 'guest-get-fsinfo')) {
    const fsinfo = (await ask('guest-get-fsinfo')) as { mountpoint?: unknown }[];
    mountpoints = fsinfo.map((f) => String(f.mountpoint));
    if (o.freeze !== 'all') {
      const mounted = new Set(mountpoints);
      notMounted = o.freeze.filter((m) => !mounted.has(m));
      if (notMounted.length)
        problems.push(
          new QuiesceError('CONFIG_MISMATCH', `not mounted in the guest: ${notMounted.join(', ')}`, { guest: o.guest }),
        );
    }
  }
  return { caps, status, missingCommands, watchdog: hasWatchdog(caps), mountpoints, notMounted, problems };
}

/** One of the preflight's questions: a command without arguments (they only read). */
function read(agent: GuestAgent, command: string, timeoutMs: number): Promise<unknown> {
  return agent.execute(command, undefined, { timeoutMs });
}

/** A promise asked ahead: one never awaited (its command turned out disabled) is no unhandled rejection. */
function early<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
