import { readFileSync } from 'node:fs';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { keyFileBoolean, keyFileEscape, keyFileList, keyFileString, parseKeyFile } from './keyfile.js';

export const METHODS = ['virtio-serial', 'isa-serial', 'unix-listen', 'vsock-listen', 'stdio'] as const;
export type Method = (typeof METHODS)[number];

export const DEFAULT_VIRTIO_PATH = '/dev/virtio-ports/org.qemu.guest_agent.0';
export const DEFAULT_ISA_PATH = '/dev/ttyS0';
export const DEFAULT_CONFIG_PATH = '/etc/qemu/qemu-ga.conf';
export const DEFAULT_HOOK_PATH = '/etc/qemu/fsfreeze-hook';
export const DEFAULT_STATEDIR = '/var/run';
export const DEFAULT_PIDFILE = '/var/run/qemu-ga.pid';
/** Seconds a freeze or thaw hook script may run before it is killed (0: no limit). */
export const DEFAULT_HOOK_TIMEOUT = 30;
/** Seconds a freeze may last before the agent thaws on its own (0: no limit). */
export const DEFAULT_FREEZE_LIMIT = 600;

/** The agent's settings, every default resolved (the same defaults as qemu-ga). */
export interface AgentConfig {
  readonly method: Method;
  readonly path: string;
  readonly logfile: string | undefined;
  readonly pidfile: string;
  readonly fsfreezeHook: string | undefined;
  readonly statedir: string;
  readonly verbose: boolean;
  readonly daemonize: boolean;
  readonly retryPath: boolean;
  readonly blockRpcs: readonly string[];
  readonly allowRpcs: readonly string[] | undefined;
  // Beyond qemu-ga (optional so configs built by hand stay valid; parseOptions always sets them).
  /** Only these mountpoints can ever be frozen or thawed; undefined: every mount, like the reference. */
  readonly fsfreezeInclude?: readonly string[] | undefined;
  /** Seconds per hook script run; 0: no limit. Default DEFAULT_HOOK_TIMEOUT. */
  readonly fsfreezeHookTimeout?: number;
  /** Seconds a freeze may last before the watchdog thaws; 0: no limit. Default DEFAULT_FREEZE_LIMIT. */
  readonly fsfreezeLimit?: number;
}

/** What the command line asks for besides running. */
export type Action = 'run' | 'help' | 'version' | 'dump-conf' | 'list-rpcs';

/** A bad flag or config value: one line for the user, exit status 2. */
export class UsageError extends Error {}

interface Raw {
  method?: string | undefined;
  path?: string | undefined;
  logfile?: string | undefined;
  pidfile?: string | undefined;
  fsfreezeHook?: string | undefined;
  statedir?: string | undefined;
  verbose?: boolean;
  daemonize?: boolean;
  retryPath?: boolean;
  blockRpcs?: string[];
  allowRpcs?: string[];
  fsfreezeInclude?: string[];
  fsfreezeHookTimeout?: string | undefined;
  fsfreezeLimit?: string | undefined;
}

interface FlagSpec {
  short: string;
  long: string;
  arg: 'none' | 'required' | 'optional';
}

/** In qemu-ga's order (it decides the order of the "possibilities" of an ambiguous abbreviation). */
const FLAGS: readonly FlagSpec[] = [
  { short: 'h', long: 'help', arg: 'none' },
  { short: 'V', long: 'version', arg: 'none' },
  { short: 'D', long: 'dump-conf', arg: 'none' },
  { short: 'l', long: 'logfile', arg: 'required' },
  { short: 'f', long: 'pidfile', arg: 'required' },
  { short: 'F', long: 'fsfreeze-hook', arg: 'optional' },
  { short: 'v', long: 'verbose', arg: 'none' },
  { short: 'm', long: 'method', arg: 'required' },
  { short: 'p', long: 'path', arg: 'required' },
  { short: 'd', long: 'daemonize', arg: 'none' },
  { short: 'b', long: 'block-rpcs', arg: 'required' },
  // qemu-ga 7.2 still takes the old name.
  { short: 'b', long: 'blacklist', arg: 'required' },
  { short: 'a', long: 'allow-rpcs', arg: 'required' },
  { short: 't', long: 'statedir', arg: 'required' },
  { short: 'r', long: 'retry-path', arg: 'none' },
  // qemu-ga's -s (Windows service control) is accepted and ignored on Linux, argument included.
  { short: 's', long: '', arg: 'required' },
  // Long-only flags of this agent (no short letter, so none can clash with a future qemu-ga flag).
  { short: '', long: 'fsfreeze-include', arg: 'required' },
  { short: '', long: 'fsfreeze-hook-timeout', arg: 'required' },
  { short: '', long: 'fsfreeze-limit', arg: 'required' },
];

const isReference = (f: FlagSpec): boolean => f.short !== '' && f.long !== '';

/**
 * A long option by name as glibc's getopt_long finds it: an exact name, else
 * an unambiguous abbreviation (several names for the same flag are not
 * ambiguous). qemu-ga's own names are tried first so that an abbreviation it
 * accepts means the same here even though this agent has more long options.
 */
function longOption(arg: string, name: string): FlagSpec {
  const exact = FLAGS.find((f) => f.long !== '' && f.long === name);
  if (exact) return exact;
  const all = FLAGS.filter((f) => f.long !== '' && f.long.startsWith(name));
  const ours = all.filter(isReference);
  const found = ours.length > 0 ? ours : all;
  if (found.length === 0) throw new UsageError(`unrecognized option '${arg}'`);
  const first = found[0]!;
  if (found.some((f) => f.short !== first.short || f.arg !== first.arg || (f.short === '' && f !== first))) {
    throw new UsageError(`option '${arg}' is ambiguous; possibilities:${found.map((f) => ` '--${f.long}'`).join('')}`);
  }
  return first;
}

/** getopt_long as qemu-ga uses it: bundled short flags, attached or separate values, `--long=value`. */
function* getopt(argv: readonly string[]): Generator<[FlagSpec, string | undefined]> {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      if (i + 1 < argv.length) throw new UsageError(`unexpected argument '${argv[i + 1]}'`);
      return;
    }
    if (a.startsWith('--')) {
      const [name, value] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
      const spec = longOption(a, name);
      if (spec.arg === 'none' && value !== undefined)
        throw new UsageError(`option '--${spec.long}' doesn't allow an argument`);
      if (spec.arg === 'required' && value === undefined) {
        if (i + 1 >= argv.length) throw new UsageError(`option '--${spec.long}' requires an argument`);
        yield [spec, argv[++i]];
      } else {
        yield [spec, value];
      }
      continue;
    }
    if (!a.startsWith('-') || a === '-') throw new UsageError(`unexpected argument '${a}'`);
    for (let j = 1; j < a.length; j++) {
      const spec = FLAGS.find((f) => f.short !== '' && f.short === a[j]);
      if (!spec) throw new UsageError(`invalid option -- '${a[j]}'`);
      if (spec.arg === 'none') {
        yield [spec, undefined];
        continue;
      }
      const rest = a.slice(j + 1);
      if (rest !== '') yield [spec, rest];
      else if (spec.arg === 'optional') yield [spec, undefined];
      else if (i + 1 < argv.length) yield [spec, argv[++i]];
      else throw new UsageError(`option requires an argument -- '${a[j]}'`);
      break;
    }
  }
}

function commaList(value: string): string[] {
  return value.split(',').filter((s) => s !== '');
}

/**
 * A -b/-a list as qemu-ga's split_list() builds it: split at ',' (empty
 * names kept), in reverse order; each further list is appended. Only what
 * -D prints depends on the order.
 */
function rpcList(value: string): string[] {
  return value === '' ? [] : value.split(',').reverse();
}

function fromConfigFile(path: string, raw: Raw): void {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // Like qemu-ga: a missing config file is not an error.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new UsageError(`error loading configuration from path: ${path}, ${(err as Error).message}`);
  }
  try {
    const general = parseKeyFile(text).get('general');
    if (!general) return;
    const str = (key: string): string | undefined => {
      const v = general.get(key);
      return v === undefined ? undefined : keyFileString(v, key);
    };
    const bool = (key: string): boolean | undefined => {
      const v = general.get(key);
      return v === undefined ? undefined : keyFileBoolean(v, key);
    };
    const set = <K extends keyof Raw>(key: K, value: Raw[K] | undefined): void => {
      if (value !== undefined) raw[key] = value;
    };
    set('daemonize', bool('daemon'));
    set('method', str('method'));
    set('path', str('path'));
    set('logfile', str('logfile'));
    set('pidfile', str('pidfile'));
    set('fsfreezeHook', str('fsfreeze-hook'));
    set('statedir', str('statedir'));
    set('verbose', bool('verbose'));
    set('retryPath', bool('retry-path'));
    // Plain strings split at ',' (not key-file ';' lists), as qemu-ga reads them.
    const block = str('block-rpcs');
    if (block !== undefined) raw.blockRpcs = rpcList(block);
    const allow = str('allow-rpcs');
    if (allow !== undefined) raw.allowRpcs = rpcList(allow);
    const include = str('fsfreeze-include');
    if (include !== undefined) raw.fsfreezeInclude = keyFileList(include).flatMap(commaList);
    set('fsfreezeHookTimeout', str('fsfreeze-hook-timeout'));
    set('fsfreezeLimit', str('fsfreeze-limit'));
  } catch (err) {
    throw new UsageError(`error loading configuration from path: ${path}, ${(err as Error).message}`);
  }
}

/**
 * Reads the config file (QGA_CONF or /etc/qemu/qemu-ga.conf) and then the
 * command line, which wins, into a resolved config.
 */
export function parseOptions(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): { action: Action; config: AgentConfig } {
  const raw: Raw = {};
  fromConfigFile(env['QGA_CONF'] ?? DEFAULT_CONFIG_PATH, raw);
  let action: Action = 'run';
  for (const [spec, value] of getopt(argv)) {
    switch (spec.short) {
      case 'm':
        raw.method = value;
        break;
      case 'p':
        raw.path = value;
        break;
      case 'l':
        raw.logfile = value;
        break;
      case 'f':
        raw.pidfile = value;
        break;
      case 'F':
        raw.fsfreezeHook = value ?? DEFAULT_HOOK_PATH;
        break;
      case 't':
        raw.statedir = value;
        break;
      case 'v':
        raw.verbose = true;
        break;
      case 'd':
        raw.daemonize = true;
        break;
      case 'r':
        raw.retryPath = true;
        break;
      // -b help, -a help, -V and -h act at once, like qemu-ga's, ignoring what follows.
      case 'b':
        if (value === 'help') return { action: 'list-rpcs', config: resolveOrDefaults(raw) };
        raw.blockRpcs = [...(raw.blockRpcs ?? []), ...rpcList(value!)];
        break;
      case 'a':
        if (value === 'help') return { action: 'list-rpcs', config: resolveOrDefaults(raw) };
        raw.allowRpcs = [...(raw.allowRpcs ?? []), ...rpcList(value!)];
        break;
      case 's':
        break;
      case 'V':
        return { action: 'version', config: resolveOrDefaults(raw) };
      case 'D':
        if (action === 'run') action = 'dump-conf';
        break;
      case 'h':
        return { action: 'help', config: resolveOrDefaults(raw) };
      case '':
        if (spec.long === 'fsfreeze-include')
          raw.fsfreezeInclude = [...(raw.fsfreezeInclude ?? []), ...commaList(value!)];
        else if (spec.long === 'fsfreeze-hook-timeout') raw.fsfreezeHookTimeout = value;
        else if (spec.long === 'fsfreeze-limit') raw.fsfreezeLimit = value;
        break;
    }
  }
  return { action, config: resolve(raw) };
}

/** For the actions that do not run the agent: the config when it resolves, else the defaults. */
function resolveOrDefaults(raw: Raw): AgentConfig {
  try {
    return resolve(raw);
  } catch {
    return resolve({});
  }
}

function resolve(raw: Raw): AgentConfig {
  const method = (raw.method ?? 'virtio-serial') as Method;
  if (!METHODS.includes(method)) {
    throw new UsageError(`unsupported channel method/type: ${raw.method} (one of ${METHODS.join(', ')})`);
  }
  const statedir = raw.statedir ?? DEFAULT_STATEDIR;
  if (!isAbsolute(statedir)) throw new UsageError(`statedir must be an absolute path: ${statedir}`);
  let path = raw.path;
  if (path === undefined) {
    if (method === 'virtio-serial') path = DEFAULT_VIRTIO_PATH;
    else if (method === 'isa-serial') path = DEFAULT_ISA_PATH;
    else if (method === 'stdio') path = '-';
    else throw new UsageError(`a path is required for method ${method} (-p)`);
  }
  return {
    method,
    path,
    logfile: raw.logfile,
    pidfile: raw.pidfile ?? DEFAULT_PIDFILE,
    fsfreezeHook: raw.fsfreezeHook,
    statedir,
    verbose: raw.verbose ?? false,
    daemonize: raw.daemonize ?? false,
    retryPath: raw.retryPath ?? false,
    blockRpcs: raw.blockRpcs ?? [],
    allowRpcs: raw.allowRpcs,
    fsfreezeInclude: raw.fsfreezeInclude?.map((p) => {
      if (!isAbsolute(p)) throw new UsageError(`fsfreeze-include paths must be absolute: ${p}`);
      return resolvePath(p);
    }),
    fsfreezeHookTimeout: seconds('fsfreeze-hook-timeout', raw.fsfreezeHookTimeout, DEFAULT_HOOK_TIMEOUT),
    fsfreezeLimit: seconds('fsfreeze-limit', raw.fsfreezeLimit, DEFAULT_FREEZE_LIMIT),
  };
}

/** The longest timer Node honours, in seconds. */
const MAX_SECONDS = Math.floor(0x7fffffff / 1000);

/** A whole number of seconds, 0 meaning no limit. */
function seconds(key: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!(n <= MAX_SECONDS))
    throw new UsageError(`${key} must be a number of seconds from 0 to ${MAX_SECONDS}: ${value}`);
  return n;
}

/** The config as qemu-ga -D prints it (string values escaped as GLib's key-file writer does). */
export function dumpConfig(c: AgentConfig): string {
  const e = keyFileEscape;
  const lines = ['[general]', `daemon=${c.daemonize}`, `method=${e(c.method)}`];
  lines.push(`path=${e(c.path)}`);
  if (c.logfile !== undefined) lines.push(`logfile=${e(c.logfile)}`);
  lines.push(`pidfile=${e(c.pidfile)}`);
  if (c.fsfreezeHook !== undefined) lines.push(`fsfreeze-hook=${e(c.fsfreezeHook)}`);
  lines.push(`statedir=${e(c.statedir)}`, `verbose=${c.verbose}`, `retry-path=${c.retryPath}`);
  lines.push(`block-rpcs=${e(c.blockRpcs.join(','))}`);
  if (c.allowRpcs !== undefined) lines.push(`allow-rpcs=${e(c.allowRpcs.join(','))}`);
  // This agent's own keys, only when they differ from the defaults (so -D matches qemu-ga's otherwise).
  if (c.fsfreezeInclude !== undefined) lines.push(`fsfreeze-include=${c.fsfreezeInclude.join(',')}`);
  const timeout = c.fsfreezeHookTimeout ?? DEFAULT_HOOK_TIMEOUT;
  if (timeout !== DEFAULT_HOOK_TIMEOUT) lines.push(`fsfreeze-hook-timeout=${timeout}`);
  const limit = c.fsfreezeLimit ?? DEFAULT_FREEZE_LIMIT;
  if (limit !== DEFAULT_FREEZE_LIMIT) lines.push(`fsfreeze-limit=${limit}`);
  return `${lines.join('\n')}\n`;
}
