import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import type { ResolvedGuest } from '../../config/types.js';
import { BlockJobType, DomainState, JobType } from '../../libvirt/protocol.js';
import { libvirtPool, NativeUnavailable, type LibvirtPool } from '../../libvirt/pool.js';
import { existingSocket, routeFor, sh, sshArgv, type LibvirtRoute } from '../../libvirt/transport.js';
import { parseDisks } from './domain-xml.js';
import { pickDisks } from './session.js';

/** One line of `quiesce doctor` for a libvirt guest. */
export interface LibvirtCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

const BLOCK_JOB_NAMES: Readonly<Record<number, string>> = {
  [BlockJobType.PULL]: 'a block pull',
  [BlockJobType.COPY]: 'a block copy',
  [BlockJobType.COMMIT]: 'a block commit',
  [BlockJobType.ACTIVE_COMMIT]: 'an active block commit',
  [BlockJobType.BACKUP]: 'a backup job',
};

const version = (n: number): string => `${Math.floor(n / 1e6)}.${Math.floor(n / 1e3) % 1000}.${n % 1000}`;

type SshRoute = Extract<LibvirtRoute, { kind: 'ssh' }>;

/** What the hypervisor has, asked over ssh as the transport connects: the commands, and which directories exist. */
interface RemoteFacts {
  readonly commands: ReadonlySet<string>;
  readonly dirs: ReadonlySet<string>;
}

/** One ssh round trip (the transport's own options) that asks for the proxies and `dirs`. */
async function askRemote(route: SshRoute, dirs: readonly string[], timeoutMs: number): Promise<RemoteFacts> {
  const script = [
    ...['virt-ssh-helper', route.netcat].map(
      (c) => `if command -v ${sh(c)} >/dev/null 2>&1; then echo ${sh(`command ${c}`)}; fi`,
    ),
    ...dirs.map((d) => `if [ -d ${sh(d)} ]; then echo ${sh(`dir ${d}`)}; fi`),
  ].join('; ');
  const { stdout } = await promisify(execFile)(route.command, sshArgv(route, script), {
    timeout: timeoutMs,
    env: { ...process.env, LC_ALL: 'C' },
  });
  const lines = stdout.split('\n');
  const after = (prefix: string): Set<string> =>
    new Set(lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length)));
  return { commands: after('command '), dirs: after('dir ') };
}

/** The ssh proxy the route needs, found (or not) on the hypervisor. */
function proxyCheck(route: SshRoute, facts: RemoteFacts): LibvirtCheck {
  const helper = facts.commands.has('virt-ssh-helper') && route.proxy !== 'netcat';
  const nc = facts.commands.has(route.netcat) && route.proxy !== 'native';
  const wanted = {
    native: 'virt-ssh-helper',
    netcat: route.netcat,
    auto: `neither virt-ssh-helper nor ${route.netcat}`,
  };
  const there = ` on ${route.host}`;
  return {
    name: 'ssh proxy',
    ok: helper || nc,
    detail: helper
      ? `virt-ssh-helper${there}`
      : nc
        ? `${route.netcat} to ${route.socket}${there}${route.proxy === 'auto' ? ' (no virt-ssh-helper there)' : ''}`
        : `proxy=${route.proxy}: ${wanted[route.proxy]} not found${there}`,
  };
}

const isDirectory = (dir: string): Promise<boolean> =>
  stat(dir).then(
    (st) => st.isDirectory(),
    () => false,
  );

/**
 * What `quiesce doctor` checks for a guest with a libvirt connector (and, if
 * it uses it, the libvirt snapshot provider): how the URI is reached (native
 * RPC or the virsh fallback), the connection and versions, the domain and its
 * agent channel, and for the provider the disks, the targets' directories, a
 * job already running, and overlays a previous run left. An empty list for
 * any other connector. Never throws; changes nothing.
 */
export async function libvirtChecks(
  g: Pick<ResolvedGuest, 'connector' | 'snapshot' | 'timeouts' | 'name'>,
  o: { readonly pool?: LibvirtPool } = {},
): Promise<LibvirtCheck[]> {
  if (g.connector.kind !== 'libvirt') return [];
  const c = g.connector;
  const out: LibvirtCheck[] = [];
  const add = (name: string, ok: boolean, detail: string): void => void out.push({ name, ok, detail });
  const provider = g.snapshot.provider === 'libvirt' ? g.snapshot : undefined;
  let route;
  try {
    route = routeFor(c.uri);
  } catch (err) {
    add('libvirt transport', false, (err as Error).message);
    return out;
  }
  if (route.kind === 'virsh') {
    add(
      'libvirt transport',
      !provider,
      `virsh fallback for ${route.uri}: ${route.reason}${provider ? ' — the libvirt snapshot provider needs the native protocol' : ''}`,
    );
    return out;
  }
  add(
    'libvirt transport',
    true,
    route.kind === 'unix'
      ? `native RPC on ${existingSocket(route) ?? `(no socket: ${route.sockets.join(', ')}; virsh fallback)`}`
      : `native RPC through ssh to ${route.host}`,
  );
  const t = { timeoutMs: g.timeouts.commandMs };
  // The directories the provider writes into (placeholders left aside). Over ssh libvirt writes a target
  // on the hypervisor, and a repository must be the same path on both machines.
  const remoteUri = route.kind === 'ssh';
  const dirs = [
    ...(provider?.target !== undefined
      ? [{ name: 'snapshot target directory', dir: dirname(provider.target), here: !remoteUri }]
      : []),
    ...(provider?.repository ? [{ name: 'repository directory', dir: provider.repository.dir, here: true }] : []),
  ].filter((d) => !/\{/.test(d.dir));
  let remote: RemoteFacts | undefined;
  if (route.kind === 'ssh') {
    try {
      remote = await askRemote(
        route,
        dirs.map((d) => d.dir),
        g.timeouts.connectMs,
      );
      out.push(proxyCheck(route, remote));
    } catch (err) {
      add('ssh proxy', false, `ssh to ${route.host}: ${(err as Error).message}`);
    }
  }
  const lease = (o.pool ?? libvirtPool).lease(c.uri, g.name);
  try {
    const t0 = performance.now();
    let conn;
    try {
      conn = await lease.connection();
    } catch (err) {
      add('libvirt connection', !(err instanceof NativeUnavailable) ? false : !provider, (err as Error).message);
      return out;
    }
    const lib = await conn.getLibVersion(t);
    const qemu = await conn.getVersion(t);
    add(
      'libvirt connection',
      true,
      `libvirt ${version(lib)}, QEMU ${version(qemu)}, opened in ${(performance.now() - t0).toFixed(1)} ms`,
    );
    let found;
    try {
      found = await lease.domain(c.domain, t);
    } catch (err) {
      add('domain', false, `${c.domain}: ${(err as Error).message}`);
      return out;
    }
    const { dom } = found;
    const state = await conn.getState(dom, t);
    add(
      'domain',
      state.state === DomainState.RUNNING,
      `${c.domain}: ${state.state === DomainState.RUNNING ? 'running' : `state ${state.state}, not running`}`,
    );
    const xml = await conn.getXmlDesc(dom, 0, t);
    const tag = /<target\s[^>]*name='org\.qemu\.guest_agent\.0'[^>]*>/.exec(xml)?.[0];
    const agentState = tag ? /state='(\w+)'/.exec(tag)?.[1] : undefined;
    add(
      'agent channel',
      agentState === 'connected',
      tag
        ? `org.qemu.guest_agent.0 ${agentState ?? 'state unknown'}`
        : 'the domain has no org.qemu.guest_agent.0 channel',
    );
    if (!provider) return out;
    if (provider.mode === 'backup' && lib < 6_000_000)
      add('libvirt backup', false, `backup-begin needs libvirt ≥ 6.0 (this is ${version(lib)})`);
    const all = parseDisks(xml);
    let picked: ReturnType<typeof pickDisks> = [];
    try {
      // A repository names its images per backup: only the disks matter here.
      picked = pickDisks(all, provider.disks, provider.target ?? '{disk}', { domain: c.domain, guest: g.name });
      add('snapshot disks', true, picked.map((p) => `${p.disk.name} (${p.disk.source})`).join(', '));
      if (provider.repository) {
        const raw = picked.filter((p) => p.disk.format !== 'qcow2');
        if (raw.length)
          add(
            'checkpoints',
            false,
            `${raw.map((p) => `${p.disk.name} is ${p.disk.format ?? 'of unknown format'}`).join('; ')}: libvirt keeps checkpoints (the chain's bitmaps) only in qcow2 images`,
          );
      }
      if (provider.mode === 'snapshot') {
        const stacked = picked.filter((p) => p.disk.backed && p.disk.format === 'qcow2');
        if (stacked.length)
          add(
            'overlays',
            false,
            `${stacked.map((p) => `${p.disk.name} runs on ${p.disk.source}, which has a backing file`).join('; ')}: an overlay a previous run did not merge? (virsh blockcommit … --active --shallow --pivot)`,
          );
      }
    } catch (err) {
      add('snapshot disks', false, (err as Error).message);
    }
    for (const d of dirs) {
      const sides = [
        ...(d.here ? [{ where: 'here', found: await isDirectory(d.dir) }] : []),
        ...(route.kind === 'ssh' ? [{ where: `on ${route.host}`, found: remote?.dirs.has(d.dir) }] : []),
      ];
      const where = (found: boolean | undefined): string =>
        sides
          .filter((x) => x.found === found)
          .map((x) => x.where)
          .join(' and ');
      const [unchecked, missing] = [where(undefined), where(false)];
      add(
        d.name,
        !unchecked && !missing,
        unchecked
          ? `${d.dir}: not checked ${unchecked} (ssh failed)`
          : !remoteUri
            ? `${d.dir}${missing ? ' does not exist' : ''}`
            : missing
              ? `${d.dir} does not exist ${missing}`
              : `${d.dir} (${sides
                  .map((x) => x.where)
                  .reverse()
                  .join(' and ')})`,
      );
    }
    // A block job on a disk (a commit a killed run left, a copy of someone else's) makes libvirt refuse the
    // snapshot or the backup of that disk: found here, not inside a window.
    const blockJobs: string[] = [];
    for (const p of picked) {
      const j = await conn.getBlockJobInfo(dom, p.disk.name, 0, t);
      if (j.found) {
        const done = j.end > 0n ? ` at ${Number((j.cur * 100n) / j.end)}%` : '';
        blockJobs.push(`${p.disk.name}: ${BLOCK_JOB_NAMES[j.type] ?? `a block job of type ${j.type}`}${done}`);
      }
    }
    if (picked.length)
      add(
        'block jobs',
        blockJobs.length === 0,
        blockJobs.length
          ? `${blockJobs.join('; ')}: libvirt refuses a snapshot or backup of the disk until it ends (virsh blockjob ${c.domain} DISK --pivot, or --abort)`
          : 'none running',
      );
    const job = await conn.getJobInfo(dom, t);
    add(
      'domain job',
      job.type === JobType.NONE,
      job.type === JobType.NONE ? 'none running' : `a job of type ${job.type} runs: a backup would be refused`,
    );
  } catch (err) {
    add('libvirt', false, (err as Error).message);
  } finally {
    lease.release();
  }
  return out;
}
