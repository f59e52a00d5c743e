import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { keyFileBoolean, keyFileList, parseKeyFile } from './keyfile.js';

export const METHODS = ['virtio-serial', 'isa-serial', 'unix-listen', 'vsock-listen', 'stdio'] as const;
export type Method = (typeof METHODS)[number];

export const DEFAULT_VIRTIO_PATH = '/dev/virtio-ports/org.qemu.guest_agent.0';
export const DEFAULT_ISA_PATH = '/dev/ttyS0';
export const DEFAULT_CONFIG_PATH = '/etc/qemu/qemu-ga.conf';
export const DEFAULT_HOOK_PATH = '/etc/qemu/fsfreeze-hook';
export const DEFAULT_STATEDIR = '/var/run';
export const DEFAULT_PIDFILE = '/var/run/qemu-ga.pid';

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
}

/** What the command line asks for besides running. */
export type Action = 'run' | 'help' | 'version' | 'dump-conf' | 'list-rpcs';

/** A bad flag or config value: one line for the user, exit status 2. */
export class UsageError extends Error {}

interface Raw {
  method?: string;
  path?: string;
  logfile?: string;
  pidfile?: string;
  fsfreezeHook?: string;
  statedir?: string;
  verbose?: boolean;
  daemonize?: boolean;
  retryPath?: boolean;
  blockRpcs?: string[];
  allowRpcs?: string[];
}

interface FlagSpec {
  short: string;
  long: string;
  arg: 'none' | 'required' | 'optional';
}

const FLAGS: readonly FlagSpec[] = [
  { short: 'm', long: 'method', arg: 'required' },
  { short: 'p', long: 'path', arg: 'required' },
  { short: 'l', long: 'logfile', arg: 'required' },
  { short: 'f', long: 'pidfile', arg: 'required' },
  { short: 'F', long: 'fsfreeze-hook', arg: 'optional' },
  { short: 't', long: 'statedir', arg: 'required' },
  { short: 'v', long: 'verbose', arg: 'none' },
  { short: 'V', long: 'version', arg: 'none' },
  { short: 'd', long: 'daemonize', arg: 'none' },
  { short: 'b', long: 'block-rpcs', arg: 'required' },
  { short: 'a', long: 'allow-rpcs', arg: 'required' },
  { short: 'D', long: 'dump-conf', arg: 'none' },
  { short: 'r', long: 'retry-path', arg: 'none' },
  { short: 'h', long: 'help', arg: 'none' },
];

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
      const spec = FLAGS.find((f) => f.long === name);
      if (!spec) throw new UsageError(`unrecognized option '--${name}'`);
      if (spec.arg === 'none' && value !== undefined)
        throw new UsageError(`option '--${name}' doesn't allow an argument`);
      if (spec.arg === 'required' && value === undefined) {
        if (i + 1 >= argv.length) throw new UsageError(`option '--${name}' requires an argument`);
        yield [spec, argv[++i]];
      } else {
        yield [spec, value];
      }
      continue;
    }
    if (!a.startsWith('-') || a === '-') throw new UsageError(`unexpected argument '${a}'`);
    for (let j = 1; j < a.length; j++) {
      const spec = FLAGS.find((f) => f.short === a[j]);
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
    const str = (key: string): string | undefined => general.get(key);
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
    const block = str('block-rpcs');
    if (block !== undefined) raw.blockRpcs = keyFileList(block).flatMap(commaList);
    const allow = str('allow-rpcs');
    if (allow !== undefined) raw.allowRpcs = keyFileList(allow).flatMap(commaList);
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
      case 'b':
        if (value === 'help') action = 'list-rpcs';
        else raw.blockRpcs = [...(raw.blockRpcs ?? []), ...commaList(value!)];
        break;
      case 'a':
        if (value === 'help') action = 'list-rpcs';
        else raw.allowRpcs = [...(raw.allowRpcs ?? []), ...commaList(value!)];
        break;
      case 'V':
        action = 'version';
        break;
      case 'D':
        if (action === 'run') action = 'dump-conf';
        break;
      case 'h':
        action = 'help';
        break;
    }
  }
  return { action, config: resolve(raw) };
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
  };
}

/** The config as qemu-ga -D prints it. */
export function dumpConfig(c: AgentConfig): string {
  const lines = ['[general]', `daemon=${c.daemonize}`, `method=${c.method}`];
  lines.push(`path=${c.path}`);
  if (c.logfile !== undefined) lines.push(`logfile=${c.logfile}`);
  lines.push(`pidfile=${c.pidfile}`);
  if (c.fsfreezeHook !== undefined) lines.push(`fsfreeze-hook=${c.fsfreezeHook}`);
  lines.push(`statedir=${c.statedir}`, `verbose=${c.verbose}`, `retry-path=${c.retryPath}`);
  lines.push(`block-rpcs=${[...c.blockRpcs].reverse().join(',')}`);
  if (c.allowRpcs !== undefined) lines.push(`allow-rpcs=${[...c.allowRpcs].reverse().join(',')}`);
  return `${lines.join('\n')}\n`;
}
