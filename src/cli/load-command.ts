import { setFlagsFromString } from 'node:v8';
import type { CliContext } from './context.js';

/** A subcommand's implementation and the CLI context, loaded when the subcommand runs. */
export interface LoadedCommand<T> {
  readonly impl: T;
  readonly CliContext: typeof CliContext;
}

/**
 * What a command with a frozen window and a config file loads that never runs
 * inside the window: the config loader, cosmiconfig and zod. (winston loads
 * with the log's first event: log/logger.ts. execa loads only where libvirt's
 * virsh fallback first runs, before the freeze.)
 */
const loadOutsideWindow = (): Promise<unknown> => import('../config/load.js');

/**
 * Loads a subcommand's modules when it runs (`quiesce --version` and `--help`
 * load none). With `frozenWindow`, the subcommand opens a frozen window: its
 * modules are compiled eagerly (V8's --no-lazy, set only while they load), so
 * that no function first called inside the window (the freeze, the snapshot
 * step, the thaw, the agent client's reply path) is compiled there. A flag set
 * at run time applies to code compiled afterwards. The config loader above is
 * loaded first and compiles lazily as usual: it is most of the code loaded,
 * and none of it runs inside the window. `config: false` (a freeze without a
 * config file) leaves it unloaded.
 */
export async function loadCommand<T>(
  impl: () => Promise<T>,
  o: { readonly frozenWindow?: boolean; readonly config?: boolean } = {},
): Promise<LoadedCommand<T>> {
  if (!o.frozenWindow) {
    const [loaded, context] = await Promise.all([impl(), import('./context.js')]);
    return { impl: loaded, CliContext: context.CliContext };
  }
  if (o.config ?? true) await loadOutsideWindow();
  return compiledEagerly(async () => {
    const [loaded, context] = await Promise.all([impl(), import('./context.js')]);
    warmUpNodeInternals();
    return { impl: loaded, CliContext: context.CliContext };
  });
}

/**
 * Runs `load` with V8's --no-lazy: every function of the modules it loads is
 * compiled as they load. A command with a frozen window loads its connectors
 * and snapshot providers this way once it knows which kinds its guests use
 * (workflow/plan.ts's loadGuestKinds). A module already loaded stays as it
 * was compiled: call this before anything else loads them. This matters for
 * the CLI run from its modules (tsc's dist/src, tsx); the installed command's
 * bundle is one script compiled whole before anything runs (cli/loader.ts).
 */
export async function compiledEagerly<T>(load: () => Promise<T>): Promise<T> {
  await loadNodeModules();
  setFlagsFromString('--no-lazy');
  try {
    return await load();
  } finally {
    setFlagsFromString('--lazy');
  }
}

/**
 * Node's own modules that the eagerly compiled ones import, loaded before the
 * flag is set: under --no-lazy Node's built-in code cache no longer matches
 * V8's flags, and each built-in loaded then is compiled from source, every
 * function of it (docs/benchmarks.md, Start-up). An ES import of a built-in also
 * evaluates its lazy exports (node:net's BlockList, node:util's parseArgs):
 * imported here the same way. A built-in missing from this list still loads,
 * only slower.
 */
const loadNodeModules = (): Promise<unknown> =>
  Promise.all([
    import('node:crypto'),
    import('node:fs/promises'),
    import('node:net'),
    import('node:timers/promises'),
    import('node:util'),
  ]);

/**
 * Node's own code that the window is first to use compiles there too, beyond
 * the flag's reach: AbortSignal listeners (the budget's abort, the snapshot
 * step's cancel) and the timer queue with timers of two durations. Used once
 * here, on nothing.
 */
function warmUpNodeInternals(): void {
  const controller = new AbortController();
  const listener = (): void => {};
  controller.signal.addEventListener('abort', listener, { once: true });
  controller.signal.removeEventListener('abort', listener);
  controller.signal.addEventListener('abort', listener, { once: true });
  controller.abort();
  const timers = [setTimeout(listener, 60_000), setTimeout(listener, 120_000)];
  for (const t of timers) clearTimeout(t);
}
