import type { ResolvedConfig } from '../config/types.js';
import { createLogger, type HostLog } from '../log/logger.js';
import type { LogEvent } from '../log/events.js';
import { recover } from '../workflow/recover.js';
import { ProgressSink, progressIntervalFromEnv } from './progress.js';
import type { RecoveryResult } from '../workflow/results.js';

export interface GlobalOptions {
  readonly config?: string;
  readonly json?: boolean;
  readonly verbose?: boolean;
  /** No progress: neither the live display nor `progress` log events. */
  readonly quiet?: boolean;
}

/** Shared by every subcommand: the logger, the config (once, validated), recovery first. */
export class CliContext {
  readonly log: HostLog;
  /**
   * Frozen windows open right now. While any is, log lines wait in memory:
   * nothing is written while frozen (in --local mode stderr may sit on the
   * frozen filesystem) and writing costs no time inside the window.
   */
  openWindows = 0;

  readonly onWindow = (open: boolean): void => {
    this.openWindows += open ? 1 : -1;
    if (this.openWindows === 0) {
      this.log.flush();
      this.progress.resume();
    }
  };
  /** Progress of the steps and copies: a live display on a terminal, throttled log events off one. */
  readonly progress: ProgressSink;
  readonly events: LogEvent[] = [];

  constructor(
    readonly opts: GlobalOptions,
    /** Where results go (stdout; tests capture them). */
    private readonly out: (text: string) => void = (text) => void process.stdout.write(text),
  ) {
    const hold = (): boolean => this.openWindows > 0;
    this.progress = new ProgressSink({
      mode: opts.quiet ? 'off' : process.stderr.isTTY && !opts.json ? 'tty' : 'events',
      hold,
      intervalMs: progressIntervalFromEnv(),
    });
    const logger = createLogger({
      verbose: opts.verbose ?? false,
      capture: this.events,
      hold,
      around: this.progress.around,
    });
    const log = (e: LogEvent): void => {
      if (this.progress.admit(e)) logger(e);
    };
    this.log = Object.assign(log, { flush: logger.flush, ready: logger.ready });
  }

  private readonly recoveries = new Map<string, Promise<RecoveryResult[]>>();

  /**
   * Loads the config, then recovers its journal: every command starts by
   * thawing what a dead run left frozen. With `frozenWindow` (run, freeze), the
   * config's connectors and snapshot providers are loaded before that
   * recovery, compiled eagerly: recovery would otherwise load a connector as
   * usual, and the window would run code compiled inside it. Their connections
   * then start opening (guest/connect.ts's connectAhead).
   */
  async loadConfig(o: { readonly frozenWindow?: boolean } = {}): Promise<ResolvedConfig> {
    // Loaded here, not with the CLI: cosmiconfig and zod are a large part of start-up, and `freeze --local` needs neither.
    const { loadConfig } = await import('../config/load.js');
    const config = await loadConfig(this.opts.config ? { file: this.opts.config } : {});
    if (o.frozenWindow) {
      const [{ compiledEagerly }, { loadGuestKinds }] = await Promise.all([
        import('./load-command.js'),
        import('../workflow/plan.js'),
      ]);
      const guests = [...config.guests.values()];
      await compiledEagerly(() => loadGuestKinds(guests));
      // libvirtd's part of the connect runs meanwhile: recovery, the run's lock, the log's set-up.
      await (await import('../guest/connect.js')).connectAhead(guests.map((g) => g.connector));
    }
    await this.recover(config.stateDir);
    return config;
  }

  /** Thaws what a dead run left frozen (journal); once per state dir and process. */
  recover(stateDir: string): Promise<RecoveryResult[]> {
    let r = this.recoveries.get(stateDir);
    if (!r) {
      r = recover(stateDir, this.log);
      this.recoveries.set(stateDir, r);
    }
    return r;
  }

  /** Prints the result: JSON with --json, else the readable text. */
  print(json: unknown, text: string): void {
    this.progress.end();
    this.out(this.opts.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  }
}

/** The job to run: the one named, or the only one. */
export function pickJob(config: ResolvedConfig, job: string | undefined): string {
  if (job) return job;
  const jobs = [...config.jobs.keys()];
  if (jobs.length === 1) return jobs[0]!;
  throw Object.assign(new Error(`name a job: ${jobs.length ? jobs.join(', ') : 'the config defines none'}`), {
    usage: true,
  });
}
