import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { QuiesceError } from '../errors.js';
import { DEFAULT_SOCKET, type RpcTransport } from './client.js';

/**
 * How a libvirt URI is reached: libvirtd's unix socket on this machine, a
 * stream through `ssh` (qemu+ssh), or — for what this client does not speak
 * natively (TLS, TCP, libssh, other drivers) — `virsh`, with the reason.
 */
export type LibvirtRoute =
  | {
      readonly kind: 'unix';
      /** The URI as configured (or the default one). */
      readonly uri: string;
      /** What connect-open asks for (the URI without transport and transport parameters). */
      readonly name: string;
      /** Sockets to try, in order (libvirtd's, then the modular daemons' virtqemud). */
      readonly sockets: readonly string[];
    }
  | {
      readonly kind: 'ssh';
      readonly uri: string;
      readonly name: string;
      readonly host: string;
      readonly user?: string;
      readonly port?: number;
      readonly keyfile?: string;
      /** `no_verify=1`: the host key is neither checked nor recorded. */
      readonly noVerify: boolean;
      /** The ssh binary (`command=`). */
      readonly command: string;
      /** The remote socket netcat connects to when the remote host has no virt-ssh-helper. */
      readonly socket: string;
      readonly netcat: string;
      /** `proxy=`: auto (virt-ssh-helper, else netcat), netcat, native (virt-ssh-helper only). */
      readonly proxy: 'auto' | 'netcat' | 'native';
    }
  | { readonly kind: 'virsh'; readonly uri: string; readonly reason: string };

/** The URI used when a connector names none: $LIBVIRT_DEFAULT_URI, else qemu:///system (root) or qemu:///session. */
export function defaultUri(env: NodeJS.ProcessEnv = process.env): string {
  return env['LIBVIRT_DEFAULT_URI'] || (process.getuid?.() === 0 ? 'qemu:///system' : 'qemu:///session');
}

/** Parameters the client itself consumes (libvirt's remote driver strips them from the name too). */
const TRANSPORT_PARAMS = new Set([
  'name',
  'socket',
  'command',
  'keyfile',
  'no_verify',
  'no_tty',
  'netcat',
  'proxy',
  'mode',
  'sshauth',
  'known_hosts',
  'known_hosts_verify',
  'pkipath',
  'tls_priority',
  'no_sanity',
]);

/** Works out how to reach `uri` (undefined: defaultUri()). Throws CONFIG for what is not a libvirt URI. */
export function routeFor(uri: string | undefined, env: NodeJS.ProcessEnv = process.env): LibvirtRoute {
  const given = uri ?? defaultUri(env);
  let u: URL;
  try {
    u = new URL(given);
  } catch {
    throw new QuiesceError('CONFIG', `not a libvirt URI: ${given}`);
  }
  const [driver = '', transport] = u.protocol.replace(/:$/, '').split('+', 2);
  const params = u.searchParams;
  const virsh = (reason: string): LibvirtRoute => ({ kind: 'virsh', uri: given, reason });
  if (driver !== 'qemu') return virsh(`driver '${driver}' (only qemu is spoken natively)`);
  const rest = [...params.entries()].filter(([k]) => !TRANSPORT_PARAMS.has(k));
  const name =
    params.get('name') ?? `${driver}://${u.pathname}${rest.length ? `?${new URLSearchParams(rest).toString()}` : ''}`;
  const host = u.hostname;
  const path = u.pathname;
  if (transport === undefined || transport === 'unix') {
    if (host && transport === undefined) return virsh(`a host without a transport is TLS (${given})`);
    const socket = params.get('socket');
    if (socket) return { kind: 'unix', uri: given, name, sockets: [socket] };
    if (path === '/system') {
      return {
        kind: 'unix',
        uri: given,
        name,
        sockets: [DEFAULT_SOCKET, '/var/run/libvirt/virtqemud-sock'],
      };
    }
    if (path === '/session') {
      const run = env['XDG_RUNTIME_DIR'] || `/run/user/${process.getuid?.() ?? 0}`;
      return {
        kind: 'unix',
        uri: given,
        name,
        sockets: [`${run}/libvirt/libvirt-sock`, `${run}/libvirt/virtqemud-sock`],
      };
    }
    return virsh(`path '${path}' (qemu:///system or qemu:///session)`);
  }
  if (transport === 'ssh') {
    if (!host) return virsh(`qemu+ssh needs a host (${given})`);
    const proxy = params.get('proxy') ?? 'auto';
    if (proxy !== 'auto' && proxy !== 'netcat' && proxy !== 'native')
      throw new QuiesceError('CONFIG', `${given}: proxy=${proxy} (auto, netcat or native)`);
    const port = u.port ? Number(u.port) : undefined;
    return {
      kind: 'ssh',
      uri: given,
      name,
      host: host.replace(/^\[(.*)\]$/, '$1'),
      ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(params.get('keyfile') ? { keyfile: params.get('keyfile')! } : {}),
      noVerify: params.get('no_verify') === '1',
      command: params.get('command') ?? 'ssh',
      socket: params.get('socket') ?? (path === '/session' ? 'libvirt/libvirt-sock' : DEFAULT_SOCKET),
      netcat: params.get('netcat') ?? 'nc',
      proxy,
    };
  }
  return virsh(`transport '${transport}' (unix and ssh are spoken natively)`);
}

/** The first socket of the route that exists, or undefined. */
export function existingSocket(route: Extract<LibvirtRoute, { kind: 'unix' }>): string | undefined {
  return route.sockets.find((s) => existsSync(s));
}

/** One word for a POSIX shell. */
export function sh(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The remote command, as libvirt's own client builds it: virt-ssh-helper
 * (libvirt ≥ 6.8) where the remote host has it, else netcat on the socket.
 */
export function remoteCommand(r: Extract<LibvirtRoute, { kind: 'ssh' }>): string {
  const nc =
    `if ${sh(r.netcat)} -q 2>&1 | grep "requires an argument" >/dev/null 2>&1; then ARG=-q0; else ARG=; fi; ` +
    `${sh(r.netcat)} $ARG -U ${sh(r.socket)}`;
  const helper = `${sh('virt-ssh-helper')} ${sh(r.name)}`;
  switch (r.proxy) {
    case 'native':
      return `exec ${helper}`;
    case 'netcat':
      return nc;
    case 'auto':
      return `if command -v virt-ssh-helper >/dev/null 2>&1; then exec ${helper}; else ${nc}; fi`;
  }
}

/**
 * ssh's argv for the route (BatchMode: a run never waits for a password
 * prompt), running `command` there (default: the proxy to libvirtd's socket).
 */
export function sshArgv(r: Extract<LibvirtRoute, { kind: 'ssh' }>, command = remoteCommand(r)): string[] {
  return [
    ...(r.port !== undefined ? ['-p', String(r.port)] : []),
    ...(r.user !== undefined ? ['-l', r.user] : []),
    ...(r.keyfile !== undefined ? ['-i', r.keyfile] : []),
    '-T',
    '-e',
    'none',
    '-o',
    'BatchMode=yes',
    ...(r.noVerify ? ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'] : []),
    '--',
    r.host,
    'sh',
    '-c',
    sh(command),
  ];
}

/** How many bytes of ssh's stderr are kept for error messages. */
const STDERR_KEEP = 4096;

/** An ssh process whose stdio carries the RPC stream; stderr() is what ssh said (auth failures, unknown hosts). */
export interface SshTransport extends RpcTransport {
  stderr(): string;
}

/** Starts ssh to the route's host; resolves once the process runs (nothing is known about the login yet). */
export async function openSsh(r: Extract<LibvirtRoute, { kind: 'ssh' }>): Promise<SshTransport> {
  const child = spawn(r.command, sshArgv(r), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  let err = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    err = (err + d).slice(-STDERR_KEEP);
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) =>
      reject(new QuiesceError('CONNECT_FAILED', `cannot run ${r.command} for ${r.uri}: ${e.message}`, { cause: e })),
    );
  });
  const stream = Duplex.from({ readable: child.stdout, writable: child.stdin });
  const who = `${r.user !== undefined ? `${r.user}@` : ''}${r.host}${r.port !== undefined ? `:${r.port}` : ''}`;
  return {
    stream,
    address: `libvirt+ssh:${who}`,
    stderr: () => err.trim(),
    ref: () => {
      child.ref();
      for (const s of [child.stdin, child.stdout, child.stderr]) (s as { ref?: () => void }).ref?.();
    },
    unref: () => {
      child.unref();
      for (const s of [child.stdin, child.stdout, child.stderr]) (s as { unref?: () => void }).unref?.();
    },
    close: () => {
      child.stdin.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}
