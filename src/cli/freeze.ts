import { runProcess } from '../process/run.js';
import { QuiesceError } from '../errors.js';
import { localFreezeProblems } from '../config/frozen-paths.js';
import { describeConnector, type ConnectorSpec } from '../config/connector.js';
import { DEFAULTS } from '../config/defaults.js';
import type { ResolvedConfig } from '../config/types.js';
import { freezeGuard } from '../workflow/freeze-guard.js';
import { defaultAgentFactory, GuestRun } from '../workflow/guest-run.js';
import { Journal } from '../workflow/journal.js';
import type { GuestPlan } from '../workflow/plan.js';
import { loadGuestKinds, newRunId } from '../workflow/plan.js';
import { SignalGuard } from '../workflow/signals.js';
import { EXIT } from '../workflow/exit-code.js';
import type { CliContext } from './context.js';
import { compiledEagerly } from './load-command.js';

export interface FreezeOptions {
  readonly guest?: string;
  readonly local?: boolean;
  readonly mountpoint?: readonly string[];
  /** Milliseconds the command may run frozen. */
  readonly budgetMs?: number;
  readonly stateDir: string;
}

/**
 * `quiesce freeze --guest G|--local [--mountpoint M…] -- CMD ARGS…`: freeze,
 * run CMD, thaw, exit with CMD's status (the CI hook). CMD runs inside the
 * frozen window under the budget; it is cancelled when the budget runs out.
 */
export async function freezeAndRun(
  ctx: CliContext,
  config: ResolvedConfig | undefined,
  cmd: readonly string[],
  o: FreezeOptions,
): Promise<number> {
  if (cmd.length === 0) throw usage('give the command to run while frozen after --');
  if (!!o.local === !!o.guest) throw usage('give exactly one of --guest NAME or --local');
  let connector: ConnectorSpec;
  let freeze: 'all' | readonly string[];
  const base = config?.guests.get(o.guest ?? '');
  if (o.local) {
    // Freezing every filesystem of the machine quiesce runs on would freeze its own root.
    if (!o.mountpoint?.length)
      throw usage('--local needs --mountpoint (freezing every filesystem of this machine would hang it)');
    connector = { kind: 'local', agentArgs: [] };
    freeze = o.mountpoint;
  } else {
    if (!config) throw usage('--guest needs a config file that defines the guest');
    if (!base) throw usage(`no guest named '${o.guest}' in ${config.source}`);
    connector = base.connector;
    freeze = o.mountpoint?.length ? o.mountpoint : base.freeze;
  }
  const name = o.guest ?? 'local';
  if (freeze !== 'all') {
    const twice = freeze.find((m, i) => freeze.indexOf(m) !== i);
    if (twice) throw usage(`--mountpoint: ${twice} is listed twice`);
  }
  if (connector.kind === 'local' && freeze !== 'all') {
    // The journal is written while the window opens: never on a filesystem this command freezes.
    const problems = localFreezeProblems({ guest: name, mountpoints: freeze, stateDir: o.stateDir });
    if (problems.length) throw usage(problems.join('; '));
  }
  const budgetMs = o.budgetMs ?? DEFAULTS.budgetMs;
  const g: GuestPlan = {
    name,
    address: describeConnector(connector),
    connector,
    freeze,
    timeouts: base?.timeouts ?? DEFAULTS.timeouts,
    maxReplyBytes: base?.maxReplyBytes ?? DEFAULTS.maxReplyBytes,
    preHooks: [],
    snapshot: { provider: 'command', argv: cmd, timeoutMs: budgetMs },
    backup: undefined,
    verify: undefined,
    prune: undefined,
    postHooks: [],
  };
  // Compiled whole before the window (and before recovery connects); a no-op for those the config's load loaded.
  await compiledEagerly(() => loadGuestKinds([g]));
  const runId = newRunId(new Date());
  const run = new GuestRun(g, name, ctx.log, defaultAgentFactory, 0, runId);
  const signals = new SignalGuard(ctx.log).install();
  let cmdStatus: number | undefined;
  try {
    await ctx.recover(o.stateDir);
    try {
      await run.connectAndCheck();
    } catch {
      return EXIT.FAILED;
    }
    // No module may load inside the frozen window: the log's winston (loading since connect's first event) is ready.
    await ctx.log.ready();
    const outcome = await freezeGuard(
      name,
      [run],
      {
        runId,
        job: 'freeze',
        budgetMs,
        journal: new Journal(o.stateDir),
        signals,
        log: ctx.log,
        onWindow: ctx.onWindow,
        spawnsInWindow: true,
      },
      async (m, signal) => {
        const r = await runProcess(cmd, {
          timeoutMs: budgetMs,
          signal,
          guest: name,
          step: 'command',
          log: ctx.log,
          stdio: 'inherit',
        });
        if (r.exitCode !== undefined && !r.cancelled && !r.timedOut) cmdStatus = r.exitCode;
        else m.addError(r.cancelled ? 'INTERRUPTED' : 'STEP_FAILED', r.error ?? 'the command failed', 'command');
      },
    );
    const code = freezeExitCode(run, outcome.budgetExceeded, signals.exitCode(), cmdStatus);
    if (ctx.opts.json) {
      ctx.print(
        { ...run.result, exitCode: code, commandStatus: cmdStatus ?? null, budgetExceeded: outcome.budgetExceeded },
        '',
      );
    }
    return code;
  } finally {
    ctx.log.flush();
    signals.uninstall();
    await run.close();
  }
}

function freezeExitCode(
  run: GuestRun,
  budgetExceeded: boolean,
  signalExit: number | undefined,
  cmdStatus: number | undefined,
): number {
  if (run.result.thawProven === false || run.result.errors.some((e) => e.code === 'THAW_UNPROVEN'))
    return EXIT.THAW_UNPROVEN;
  if (signalExit !== undefined) return signalExit;
  if (!run.freezeAttempted || budgetExceeded || cmdStatus === undefined) return EXIT.FAILED;
  return cmdStatus;
}

function usage(message: string): QuiesceError {
  return new QuiesceError('CONFIG', message);
}
