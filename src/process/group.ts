import { readdirSync } from 'node:fs';
import { processInfo } from './pid.js';

/** How often a group whose leader has exited is checked for emptiness while its stragglers get their grace. */
const POLL_MS = 50;

/**
 * Sends `signal` to every process in group `pgid`. Returns false when the
 * group is gone (ESRCH) or none of its members may be signalled (EPERM);
 * never throws for those, since it runs from timers.
 */
export function killGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  // kill(0) and kill(-1) would hit our own group or every process we may signal.
  if (!Number.isInteger(pgid) || pgid <= 1) throw new RangeError(`not a process group id: ${pgid}`);
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH' || code === 'EPERM') return false;
    throw err;
  }
}

/** pgrp of a live process, or undefined when it is gone or a zombie. */
function livePgrp(pid: number): number | undefined {
  const p = processInfo(pid);
  return p === undefined || p.state === 'Z' || p.state === 'X' ? undefined : p.pgrp;
}

/**
 * Live (not zombie) processes in group `pgid`, counting up to `limit`.
 * kill(-pgid, 0) alone counts zombies, which linger where PID 1 does not reap
 * orphans (containers), so a group that answers is confirmed from /proc,
 * newest pids after the leader first (members are its descendants). Without
 * /proc, answering means 1.
 */
export function liveMembers(pgid: number, limit = Infinity): number {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return 0;
  }
  let pids: number[];
  try {
    pids = readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map(Number)
      .sort((a, b) => (a > pgid === b > pgid ? a - b : a > pgid ? -1 : 1));
  } catch {
    return 1;
  }
  let live = 0;
  for (const pid of pids) {
    if (livePgrp(pid) === pgid && ++live >= limit) break;
  }
  return live;
}

/** Groups started here that may still have members, with whether they were already sent SIGTERM. */
const open = new Map<number, { termSent: boolean }>();
let exitHookInstalled = false;

function onProcessExit(): void {
  // A process that is exiting cannot wait out a grace: groups already asked to stop are killed.
  for (const [pgid, g] of open) killGroup(pgid, g.termSent ? 'SIGKILL' : 'SIGTERM');
}

/**
 * Ends one process group: SIGTERM, then SIGKILL after a grace. Its timers are
 * unref'd (the child's own handle keeps the loop alive while it runs), and if
 * this process exits first the group is signalled on the way out.
 */
export class GroupTerminator {
  private termSent = false;
  /** SIGKILL went to the group: whatever is still in it is already dying. */
  killSent = false;
  private killTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly entry = { termSent: false };

  constructor(
    readonly pgid: number,
    private readonly graceMs: number,
    /** Called when SIGKILL was needed, with the number of live members it hit. */
    private readonly onKill: (live: number) => void,
  ) {
    open.set(pgid, this.entry);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', onProcessExit);
    }
  }

  /** SIGTERM now, SIGKILL after the grace; idempotent. */
  terminate(): void {
    if (this.termSent) return;
    this.termSent = this.entry.termSent = true;
    killGroup(this.pgid, 'SIGTERM');
    this.killTimer = setTimeout(() => {
      this.killTimer = undefined;
      const live = liveMembers(this.pgid);
      if (live > 0 && killGroup(this.pgid, 'SIGKILL')) {
        this.killSent = true;
        this.onKill(live);
      }
      this.stop();
    }, this.graceMs);
    this.killTimer.unref();
  }

  /**
   * After the leader has exited: stop as soon as the group is empty, so a
   * late SIGKILL can never reach a new group that reused the id.
   */
  watch(): void {
    if (this.pollTimer || !this.termSent) return;
    this.pollTimer = setInterval(() => {
      try {
        process.kill(-this.pgid, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') this.stop();
      }
    }, POLL_MS);
    this.pollTimer.unref();
  }

  /** Clears every timer and forgets the group. */
  stop(): void {
    clearTimeout(this.killTimer);
    clearInterval(this.pollTimer);
    this.killTimer = this.pollTimer = undefined;
    if (open.get(this.pgid) === this.entry) open.delete(this.pgid);
  }
}
