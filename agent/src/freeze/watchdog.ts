/** The longest setTimeout Node honours, in seconds (2^31-1 ms). */
export const MAX_LIMIT_SECONDS = Math.floor(0x7fffffff / 1000);

/**
 * Thaws on its own when a freeze outlives its limit: armed after a freeze
 * (or at start when a frozen-state marker was found), disarmed by any thaw.
 */
export class FreezeWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private deadline: number | undefined;

  /** Arms for `seconds` (0: no limit) and calls `expire` when it runs out. */
  arm(seconds: number, expire: () => void): void {
    this.disarm();
    if (seconds <= 0) return;
    const ms = Math.min(seconds, MAX_LIMIT_SECONDS) * 1000;
    this.deadline = Date.now() + ms;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.deadline = undefined;
      expire();
    }, ms);
  }

  disarm(): void {
    const timer = this.timer;
    this.timer = undefined;
    this.deadline = undefined;
    // Cleared once this turn ends, for a thaw after its reply was written (clearTimeout measured
    // ~0.1 ms of the thaw's tail in the TCG guest). A timer cannot fire before the turn ends.
    if (timer) void Promise.resolve().then(() => clearTimeout(timer));
  }

  /** When it fires (ms since the epoch), or undefined when not armed. */
  get expiresAt(): number | undefined {
    return this.deadline;
  }
}
