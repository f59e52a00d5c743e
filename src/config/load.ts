import { cosmiconfig } from 'cosmiconfig';
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import type { z } from 'zod';
import { QuiesceError } from '../errors.js';
import { DEFAULTS, defaultStateDir } from './defaults.js';
import { configSchema, type ParsedConfig, type ParsedGuest } from './schema.js';
import { unknownPlaceholders, usesPlaceholder } from './placeholders.js';
import { localFreezeProblems } from './frozen-paths.js';
import type {
  PruneConfig,
  RepositoryConfig,
  ResolvedConfig,
  ResolvedGuest,
  ResolvedJob,
  SnapshotConfig,
  Timeouts,
  VerifyConfig,
} from './types.js';
import { describeConnector, type ConnectorSpec } from './connector.js';

/** A configuration problem: names the file and the key path. Nothing has touched a guest yet. */
export class ConfigError extends QuiesceError {
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    super('CONFIG', `${file}: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

export const MODULE_NAME = 'quiesce';

const searchPlaces = [
  'quiesce.config.yaml',
  'quiesce.config.yml',
  'quiesce.config.json',
  'quiesce.config.js',
  'quiesce.config.mjs',
  '.quiescerc',
  '.quiescerc.json',
  '.quiescerc.yaml',
  '.quiescerc.yml',
  '.quiescerc.js',
  '.quiescerc.mjs',
];

/**
 * Finds (or, with `file`, loads) the configuration and validates it once into
 * a readonly resolved object. Every error names the file and the key path.
 */
export async function loadConfig(
  opts: { file?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<ResolvedConfig> {
  const explorer = cosmiconfig(MODULE_NAME, { searchPlaces, searchStrategy: 'global' });
  let found: { config: unknown; filepath: string } | null;
  try {
    found = opts.file ? await explorer.load(opts.file) : await explorer.search(opts.cwd);
  } catch (err) {
    const file = (err as { filepath?: unknown }).filepath;
    throw new ConfigError(typeof file === 'string' ? file : (opts.file ?? 'configuration'), [
      describeLoadError(err, typeof file === 'string' ? file : undefined),
    ]);
  }
  if (!found) {
    throw new ConfigError('configuration', [
      `no config file found (looked for ${searchPlaces.slice(0, 3).join(', ')}, .quiescerc* from ${opts.cwd ?? process.cwd()} up, and in ~/.config/quiesce); pass --config FILE`,
    ]);
  }
  return resolveConfig(found.config, found.filepath, opts.env ?? process.env);
}

/** Validates an already-read config object (also used for the embedded demo). */
export function resolveConfig(raw: unknown, source: string, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const problems: string[] = [];
  const interpolated = interpolate(raw, [], env, problems);
  if (problems.length) throw new ConfigError(source, problems);
  const parsed = configSchema.safeParse(interpolated);
  if (!parsed.success) throw new ConfigError(source, parsed.error.issues.map(describeIssue));
  const config = resolve(parsed.data, source, problems);
  if (problems.length) throw new ConfigError(source, problems);
  // Last, as it reads the host's filesystems: a local guest must not freeze where quiesce writes.
  for (const g of config.guests.values()) {
    if (g.connector.kind !== 'local' || g.freeze === 'all') continue;
    problems.push(
      ...localFreezeProblems({
        guest: g.name,
        mountpoints: g.freeze,
        stateDir: config.stateDir,
        metricsFile: config.metricsFile,
      }),
    );
  }
  if (problems.length) throw new ConfigError(source, problems);
  return config;
}

/**
 * Where and why a config file did not parse. cosmiconfig prefixes the parser's
 * message with "YAML Error in FILE:" and a code frame; the line, column and
 * reason are what a user needs.
 */
function describeLoadError(err: unknown, file: string | undefined): string {
  const e = err as {
    name?: string;
    message?: string;
    reason?: string;
    mark?: { line: number; column: number; buffer?: string };
  };
  // js-yaml's YAMLException: 0-based mark, e.g. "duplicated mapping key".
  if (e.name === 'YAMLException' && e.mark && e.reason)
    return `line ${e.mark.line + 1}, column ${e.mark.column + 1}: ${e.reason}${quoteLine(e.mark.buffer, e.mark.line)}`;
  // parse-json's JSONError keeps no position of its own: parse again for the engine's message.
  if (e.name === 'JSONError' && file) {
    const where = jsonSyntaxError(file);
    if (where) return where;
  }
  return (e.message ?? String(err)).split('\n')[0]!;
}

function jsonSyntaxError(file: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    JSON.parse(text);
    return undefined;
  } catch (err) {
    if (!(err instanceof SyntaxError)) return undefined;
    // Node 20: "Unexpected token } in JSON at position 19"; Node 22 adds " (line 1 column 20)".
    const m = / in JSON at position (\d+)/.exec(err.message);
    const reason = err.message.replace(/ in JSON at position \d+.*$/, '');
    // No position ("Unexpected end of JSON input"): the end of the file.
    const before = text.slice(0, m ? Number(m[1]) : text.length).split('\n');
    return `line ${before.length}, column ${before.at(-1)!.length + 1}: ${reason}`;
  }
}

/** ` ("the line")` of a 0-based line, so a duplicated key is named; nothing for an empty line. */
function quoteLine(text: string | undefined, line: number): string {
  const l = text?.split('\n')[line]?.trim();
  if (!l) return '';
  return ` (${JSON.stringify(l.length > 60 ? `${l.slice(0, 57)}...` : l)})`;
}

function keyPath(path: readonly (string | number)[]): string {
  return (
    path.reduce<string>((s, k) => (typeof k === 'number' ? `${s}[${k}]` : s ? `${s}.${k}` : k), '') || '(top level)'
  );
}

function describeIssue(issue: z.ZodIssue): string {
  if (issue.code === 'unrecognized_keys')
    return `${keyPath(issue.path)}: unknown key(s) ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
  if (issue.code === 'invalid_union_discriminator') return `${keyPath(issue.path)}: ${issue.message}`;
  return `${keyPath(issue.path)}: ${issue.message}`;
}

/** ${VAR} in any string becomes the variable's value ($${ stays a literal ${). */
function interpolate(value: unknown, path: (string | number)[], env: NodeJS.ProcessEnv, problems: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string | undefined) => {
      if (whole === '$${') return '${';
      const v = env[name!];
      if (v === undefined) {
        problems.push(`${keyPath(path)}: environment variable ${name} is not set`);
        return '';
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, [...path, i], env, problems));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, [...path, k], env, problems)]));
  }
  return value;
}

function resolve(c: ParsedConfig, source: string, problems: string[]): ResolvedConfig {
  const d = c.defaults ?? {};
  const baseTimeouts: Timeouts = {
    connectMs: d.timeouts?.connect ?? DEFAULTS.timeouts.connectMs,
    freezeMs: d.timeouts?.freeze ?? DEFAULTS.timeouts.freezeMs,
    thawMs: d.timeouts?.thaw ?? DEFAULTS.timeouts.thawMs,
    commandMs: d.timeouts?.command ?? DEFAULTS.timeouts.commandMs,
  };
  const stepMs = d.timeouts?.step ?? DEFAULTS.stepMs;
  const guests = new Map<string, ResolvedGuest>();
  for (const [name, g] of Object.entries(c.guests)) {
    guests.set(name, resolveGuest(name, g, baseTimeouts, stepMs, problems));
  }
  const jobs = new Map<string, ResolvedJob>();
  for (const [name, j] of Object.entries(c.jobs)) {
    jobs.set(name, resolveJob(name, j, d, guests, problems));
  }
  return {
    source,
    stateDir: c.stateDir ?? defaultStateDir(),
    metricsFile: c.metricsFile,
    lockWaitMs: c.lockWait ?? 0,
    guests,
    jobs,
  };
}

function resolveJob(
  name: string,
  j: ParsedConfig['jobs'][string],
  d: NonNullable<ParsedConfig['defaults']>,
  guests: ReadonlyMap<string, ResolvedGuest>,
  problems: string[],
): ResolvedJob {
  const where = `jobs.${name}`;
  const inGroups = new Map<string, number>();
  j.groups.forEach((group, gi) => {
    for (const member of group) {
      if (inGroups.has(member))
        problems.push(`${where}.groups[${gi}]: guest '${member}' is already in groups[${inGroups.get(member)}]`);
      inGroups.set(member, gi);
    }
  });
  j.guests.forEach((g, i) => {
    const first = j.guests.indexOf(g);
    if (first < i) problems.push(`${where}.guests[${i}]: guest '${g}' is listed twice (first at guests[${first}])`);
    // It would be frozen twice in one run: alone, and with its group.
    else if (inGroups.has(g))
      problems.push(
        `${where}.guests[${i}]: guest '${g}' is also in groups[${inGroups.get(g)}]: list it alone or in a group, not both`,
      );
    if (!guests.has(g)) problems.push(`${where}.guests[${i}]: no guest named '${g}' under guests`);
  });
  j.groups.forEach((group, gi) =>
    group.forEach((g, i) => {
      if (!guests.has(g)) problems.push(`${where}.groups[${gi}][${i}]: no guest named '${g}' under guests`);
    }),
  );
  if (j.guests.length === 0 && j.groups.length === 0) problems.push(`${where}: lists no guests and no groups`);
  checkSharedAddresses(where, j, guests, problems);
  if (j.notify) checkArgv(j.notify, `${where}.notify`, problems);
  return {
    name,
    guests: j.guests,
    groups: j.groups,
    concurrency: j.concurrency ?? d.concurrency ?? DEFAULTS.concurrency,
    budgetMs: j.budget ?? d.budget ?? DEFAULTS.budgetMs,
    failurePolicy: j.failurePolicy ?? d.failurePolicy ?? DEFAULTS.failurePolicy,
    notify: j.notify,
  };
}

/**
 * One agent is one machine: two guests of a job on one address would freeze
 * the same filesystems twice, and the second waits for the channel lock the
 * first holds (in a group, while the first is frozen).
 */
function checkSharedAddresses(
  where: string,
  j: ParsedConfig['jobs'][string],
  guests: ReadonlyMap<string, ResolvedGuest>,
  problems: string[],
): void {
  const members: [string, string][] = [
    ...j.guests.map((g, i): [string, string] => [g, `guests[${i}]`]),
    ...j.groups.flatMap((group, gi) => group.map((g, i): [string, string] => [g, `groups[${gi}][${i}]`])),
  ];
  const byAddress = new Map<string, string>();
  for (const [g, at] of members) {
    const guest = guests.get(g);
    if (!guest) continue;
    const address = connectorKey(guest.connector);
    const other = byAddress.get(address);
    if (other === undefined) byAddress.set(address, g);
    // The same guest listed twice is reported on its own.
    else if (other !== g)
      problems.push(
        `${where}.${at}: guests '${other}' and '${g}' share one agent address (${describeConnector(guest.connector)}): one agent is one machine, so the second would wait on the first's channel lock or freeze its filesystems twice`,
      );
  }
}

/** describeConnector, with socket paths normalised: /run//a.sock and /run/a.sock are one socket. */
function connectorKey(c: ConnectorSpec): string {
  return c.kind === 'socket' && 'path' in c
    ? describeConnector({ ...c, path: posix.normalize(c.path) })
    : describeConnector(c);
}

function checkArgv(argv: readonly string[], where: string, problems: string[]): void {
  argv.forEach((a, i) => {
    for (const bad of unknownPlaceholders(a)) {
      problems.push(
        `${where}[${i}]: unknown placeholder {${bad}} (known: {guest} {job} {runId} {timestamp} {date} {stateDir})`,
      );
    }
  });
}

function resolveSnapshot(
  s: ParsedGuest['snapshot'],
  where: string,
  stepMs: number,
  problems: string[],
  connector: ConnectorSpec,
): SnapshotConfig {
  if (s.provider === 'command') return { provider: 'command', argv: s.argv, timeoutMs: s.timeout ?? stepMs };
  const mode = s.mode ?? 'backup';
  if (s.repository !== undefined || s.level !== undefined || s.fullEvery !== undefined) {
    const repository = resolveRepository(s, where, problems, mode);
    if (s.provider === 'qmp')
      return {
        provider: 'qmp',
        socket: s.socket,
        mode: 'backup',
        disks: s.disks ?? 'all',
        target: undefined,
        repository,
        format: 'qcow2',
        timeoutMs: s.timeout ?? stepMs,
      };
    return resolveLibvirtSnapshot(
      { ...s, target: undefined, format: 'qcow2' },
      where,
      stepMs,
      problems,
      connector,
      'backup',
      s.disks ?? 'all',
      repository,
    );
  }
  if (s.target === undefined) {
    problems.push(`${where}.target: required (a file per disk), or give a repository`);
    return { provider: 'command', argv: ['true'], timeoutMs: stepMs };
  }
  const target = s.target;
  for (const bad of unknownPlaceholders(target, ['disk']))
    problems.push(
      `${where}.target: unknown placeholder {${bad}} (known: {guest} {job} {runId} {timestamp} {date} {stateDir} {disk})`,
    );
  const disks = s.disks ?? 'all';
  // Several disks need several files.
  if ((disks === 'all' || disks.length > 1) && !usesPlaceholder(target, 'disk'))
    problems.push(
      `${where}.target: needs {disk} when ${disks === 'all' ? 'disks is "all"' : 'several disks are listed'}`,
    );
  if (mode === 'snapshot' && s.format === 'raw')
    problems.push(`${where}.format: snapshot mode makes qcow2 overlays (a raw file cannot have a backing file)`);
  if (s.provider === 'libvirt')
    return resolveLibvirtSnapshot({ ...s, target }, where, stepMs, problems, connector, mode, disks);
  return {
    provider: 'qmp',
    socket: s.socket,
    mode,
    disks,
    target,
    format: s.format ?? (mode === 'snapshot' ? 'qcow2' : 'raw'),
    timeoutMs: s.timeout ?? stepMs,
  };
}

/** Placeholders a repository may use: it must name the same folder on every run. */
const REPOSITORY_PLACEHOLDERS = ['guest', 'job', 'stateDir'];

/** A repository (providers qmp and libvirt): backup mode, qcow2 chains; no target. */
function resolveRepository(
  s: Extract<ParsedGuest['snapshot'], { provider: 'qmp' | 'libvirt' }>,
  where: string,
  problems: string[],
  mode: 'backup' | 'snapshot',
): RepositoryConfig {
  if (s.repository === undefined)
    problems.push(`${where}: level and fullEvery need a repository (they describe its chains)`);
  if (s.target !== undefined)
    problems.push(`${where}: give target or repository, not both (a repository names its own files)`);
  if (mode !== 'backup') problems.push(`${where}.repository: only for mode backup (chains are made of backup copies)`);
  if (s.format === 'raw') problems.push(`${where}.format: a repository keeps qcow2 images (they carry backing files)`);
  const level = s.level ?? 'auto';
  if (s.fullEvery !== undefined && level !== 'auto')
    problems.push(`${where}.fullEvery: only with level auto (level ${level} never decides)`);
  const dir = s.repository ?? '/';
  for (const bad of unknownPlaceholders(dir))
    if (!REPOSITORY_PLACEHOLDERS.includes(bad))
      problems.push(`${where}.repository: unknown placeholder {${bad}} (known: {guest} {job} {stateDir})`);
  for (const moving of ['runId', 'timestamp', 'date'])
    if (usesPlaceholder(dir, moving))
      problems.push(`${where}.repository: {${moving}} changes every run; a repository must stay where its chains are`);
  return {
    dir,
    level,
    fullEvery: {
      ...(s.fullEvery?.backups !== undefined ? { backups: s.fullEvery.backups } : {}),
      ...(s.fullEvery?.age !== undefined ? { ageMs: s.fullEvery.age } : {}),
    },
  };
}

/** Provider libvirt: the domain and URI are the connector's, so it needs a libvirt connector. */
function resolveLibvirtSnapshot(
  s: Extract<ParsedGuest['snapshot'], { provider: 'libvirt' }>,
  where: string,
  stepMs: number,
  problems: string[],
  connector: ConnectorSpec,
  mode: 'backup' | 'snapshot',
  disks: 'all' | readonly string[],
  repository?: RepositoryConfig,
): SnapshotConfig {
  if (mode === 'backup' && s.commit !== undefined)
    problems.push(`${where}.commit: only for mode snapshot (a backup job leaves no overlay to merge)`);
  if (connector.kind !== 'libvirt') {
    problems.push(
      `${where}.provider: libvirt takes the domain and URI from a libvirt connector, but connector.type is ${connector.kind === 'socket' ? ('path' in connector ? 'socket' : 'tcp') : connector.kind}`,
    );
    return {
      provider: 'libvirt',
      domain: '',
      mode,
      disks,
      target: s.target,
      format: 'raw',
      commit: true,
      timeoutMs: stepMs,
    };
  }
  return {
    provider: 'libvirt',
    ...(connector.uri !== undefined ? { uri: connector.uri } : {}),
    domain: connector.domain,
    mode,
    disks,
    target: s.target,
    ...(repository ? { repository } : {}),
    format: s.format ?? (mode === 'snapshot' ? 'qcow2' : 'raw'),
    commit: s.commit ?? true,
    timeoutMs: s.timeout ?? stepMs,
  };
}

function resolveGuest(name: string, g: ParsedGuest, base: Timeouts, stepMs: number, problems: string[]): ResolvedGuest {
  const where = `guests.${name}`;
  if (g.snapshot.provider === 'command') checkArgv(g.snapshot.argv, `${where}.snapshot.argv`, problems);
  if (g.backup) checkArgv(g.backup.argv, `${where}.backup.argv`, problems);
  if (g.verify && 'argv' in g.verify) checkArgv(g.verify.argv, `${where}.verify.argv`, problems);
  g.hooks?.pre?.forEach((h, i) => checkArgv(h, `${where}.hooks.pre[${i}]`, problems));
  g.hooks?.post?.forEach((h, i) => checkArgv(h, `${where}.hooks.post[${i}]`, problems));
  if (g.prune?.match !== undefined)
    for (const bad of unknownPlaceholders(g.prune.match))
      problems.push(`${where}.prune.match: unknown placeholder {${bad}}`);
  // "all" on this host includes the root filesystem quiesce itself runs from.
  if (g.connector.type === 'local' && g.freeze === 'all')
    problems.push(
      `${where}.freeze: "all" is refused for a local connector: it would freeze every filesystem of this host, its root included; list the mountpoints to freeze`,
    );
  const connector: ConnectorSpec =
    g.connector.type === 'socket'
      ? { kind: 'socket', path: g.connector.path }
      : g.connector.type === 'tcp'
        ? { kind: 'socket', host: g.connector.host, port: g.connector.port }
        : g.connector.type === 'local'
          ? { kind: 'local', agentArgs: g.connector.agentArgs ?? [] }
          : { kind: 'libvirt', domain: g.connector.domain, ...(g.connector.uri ? { uri: g.connector.uri } : {}) };
  const timeouts: Timeouts = {
    connectMs: g.timeouts?.connect ?? base.connectMs,
    freezeMs: g.timeouts?.freeze ?? base.freezeMs,
    thawMs: g.timeouts?.thaw ?? base.thawMs,
    commandMs: g.timeouts?.command ?? base.commandMs,
  };
  const guestStepMs = g.timeouts?.step ?? stepMs;
  return {
    name,
    connector,
    freeze: g.freeze,
    hooks: { pre: g.hooks?.pre ?? [], post: g.hooks?.post ?? [] },
    // The snapshot runs inside the frozen window: the job's budget bounds it anyway.
    snapshot: resolveSnapshot(g.snapshot, `${where}.snapshot`, guestStepMs, problems, connector),
    backup: g.backup ? { argv: g.backup.argv, timeoutMs: g.backup.timeout ?? guestStepMs } : undefined,
    verify: g.verify ? resolveVerify(g, `${where}.verify`, guestStepMs, problems) : undefined,
    prune: g.prune ? resolvePrune(g, `${where}.prune`, problems) : undefined,
    timeouts,
    maxReplyBytes: g.maxReplyBytes ?? DEFAULTS.maxReplyBytes,
  };
}

/** The verify step: a command, or fsck/boot of the backup the run made (which needs a repository). */
function resolveVerify(g: ParsedGuest, where: string, stepMs: number, problems: string[]): VerifyConfig {
  const v = g.verify!;
  if (v.kind !== 'fsck' && v.kind !== 'boot') return { kind: 'command', argv: v.argv, timeoutMs: v.timeout ?? stepMs };
  if (g.snapshot.provider === 'command' || g.snapshot.repository === undefined)
    problems.push(
      `${where}.kind: ${v.kind} checks a restore point of the guest's repository, but the guest has none: set snapshot.repository (provider qmp or libvirt), or give verify an argv`,
    );
  if (v.kind === 'fsck') return { kind: 'fsck', timeoutMs: v.timeout ?? stepMs };
  return {
    kind: 'boot',
    kernel: v.kernel,
    initrd: v.initrd,
    append: v.append ?? DEFAULTS.verifyBootAppend,
    memoryMiB: v.memory ?? DEFAULTS.verifyBootMemoryMiB,
    cpus: v.cpus ?? 1,
    timeoutMs: v.timeout ?? DEFAULTS.verifyBootMs,
    checks: {
      mountpoints: v.checks?.mountpoints ?? [],
      files: (v.checks?.files ?? []).map((f) => ({ path: f.path, sha256: f.sha256.toLowerCase() })),
      commands: v.checks?.commands ?? [],
    },
  };
}

/** Retention over files (dir + match) or, with a repository, over its restore points. */
function resolvePrune(g: ParsedGuest, where: string, problems: string[]): PruneConfig {
  const p = g.prune!;
  const repository = g.snapshot.provider !== 'command' && g.snapshot.repository !== undefined;
  if (repository && (p.dir !== undefined || p.match !== undefined))
    problems.push(`${where}: with a repository leave out dir and match (the rules apply to its restore points)`);
  if (!repository && (p.dir === undefined || p.match === undefined))
    problems.push(`${where}: set dir and match (which files are this guest's backups), or use a repository`);
  return {
    dir: repository ? undefined : p.dir,
    match: repository ? undefined : p.match,
    keepLast: p.keepLast ?? 0,
    keepDaily: p.keepDaily ?? 0,
    keepWeekly: p.keepWeekly ?? 0,
    keepMonthly: p.keepMonthly ?? 0,
  };
}
