// Shared by the packaging tests: building the .deb, running an agent on a socket, the protocol
// smoke test, and the addon check. Caches (Node binaries, the bookworm root) live in CACHE_DIR.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Wire } from '../../helpers/wire.js';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const AGENT_DIR = join(REPO, 'agent');
export const PACKAGE_SCRIPT = join(AGENT_DIR, 'scripts', 'package.mjs');
export const AGENT_VERSION = (JSON.parse(readFileSync(join(AGENT_DIR, 'package.json'), 'utf8')) as { version: string })
  .version;

/** Downloads and roots kept between runs: `rm -rf` it to start afresh. */
export const CACHE_DIR = process.env['QUIESCE_PKG_CACHE'] ?? '/var/tmp/quiesce-pkg-cache';

export function have(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Runs a command to completion; fails the test with its output when it exits non-zero (unless `allowFail`). */
export function sh(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; allowFail?: boolean; input?: string; timeoutMs?: number } = {},
): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    env: opts.env ?? process.env,
    input: opts.input ?? '',
    timeout: opts.timeoutMs ?? 600_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  if (!opts.allowFail && r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

/** `npm run package` into `outDir`; returns the .deb's path. */
export function buildPackage(outDir: string): string {
  const r = sh(process.execPath, [PACKAGE_SCRIPT, '--out', outDir]);
  const deb = r.stdout.trim().split('\n').pop()!;
  assert.ok(existsSync(deb), `package.mjs printed ${deb}, which does not exist`);
  return deb;
}

/** The architecture dpkg builds for (the addon is native). */
export function debArch(): string {
  return sh('dpkg', ['--print-architecture']).stdout.trim();
}

export interface AgentProcess {
  readonly child: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

function canConnect(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Spawns an agent that listens on `socket` (seen from here) and waits until it accepts. */
export async function startListening(
  cmd: string,
  args: readonly string[],
  socket: string,
  env: NodeJS.ProcessEnv,
): Promise<AgentProcess> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const agent: AgentProcess = {
    child,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${cmd} ${args.join(' ')} exited at start (${child.exitCode ?? child.signalCode}): ${err}`);
    }
    if (existsSync(socket) && (await canConnect(socket))) return agent;
    await sleep(25);
  }
  await agent.stop();
  throw new Error(`${cmd} did not listen on ${socket}: ${err}`);
}

/**
 * The protocol smoke test: 0xFF + guest-sync-delimited (the host's resync), guest-ping and
 * guest-info, each checked; `fsinfo` adds guest-get-fsinfo (statfs on every mount: it needs
 * /proc).
 */
export async function smokeTest(socket: string, opts: { fsinfo?: boolean } = {}): Promise<void> {
  const wire = await Wire.open(socket);
  try {
    const id = 4242;
    wire.send(
      Buffer.concat([Buffer.of(0xff), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}`)]),
    );
    const sync = (await wire.readUntil(Buffer.from(`\xff{"return": ${id}}\n`, 'latin1'))).toString('latin1');
    // What comes before the sentinel is only the agent's answer to the stray 0xFF.
    assert.match(
      sync,
      /^(\{"error": \{"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"\}\}\n)?\xff/,
    );
    assert.deepEqual(await wire.call('guest-ping'), { return: {} });
    const info = (await wire.call('guest-info')) as {
      return: { version: string; supported_commands: { name: string; enabled: boolean }[] };
    };
    assert.equal(info.return.version, AGENT_VERSION);
    const names = info.return.supported_commands.map((c) => c.name);
    for (const n of ['guest-ping', 'guest-sync-delimited', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']) {
      assert.ok(names.includes(n), `guest-info lists ${n}`);
    }
    if (opts.fsinfo) {
      const fs = (await wire.call('guest-get-fsinfo')) as { return?: unknown[]; error?: unknown };
      assert.ok(Array.isArray(fs.return), `guest-get-fsinfo answered ${JSON.stringify(fs)}`);
    }
  } finally {
    wire.close();
  }
}

/**
 * Loads the addon given as argv[1] and calls into it: N-API (strerror, freeze of a missing path:
 * -ENOENT from open) and the libuv functions it takes from the node binary (a readiness watch
 * on a pipe, fired by a write). Prints "addon ok". Run it with `node -e ADDON_CHECK path`.
 */
export const ADDON_CHECK = `
const assert = require('node:assert');
const { closeSync } = require('node:fs');
const a = require(process.argv[1]);
assert.equal(a.strerror(16), 'Device or resource busy');
assert.equal(a.freeze('/nonexistent/quiesce-addon-check'), -2);
const [r, w] = a.pipe();
const timer = setTimeout(() => { console.error('no readiness callback'); process.exit(1); }, 5000);
const watch = a.watch(r, (status) => {
  assert.ok(status >= 0, 'poll status ' + status);
  const buf = Buffer.alloc(4);
  assert.equal(a.read(r, buf), 1);
  assert.equal(buf[0], 0x78);
  a.unwatch(watch);
  closeSync(r);
  closeSync(w);
  clearTimeout(timer);
  console.log('addon ok ' + process.version);
});
a.arm(watch);
assert.equal(a.write(w, Buffer.from('x'), 0, 1), 1);
`;

/** The Node.js binaries the bundle must run on (Debian 12 ships 18; 18.15 is the floor: fs.statfsSync). */
export const NODE_VERSIONS = ['18.20.8', '20.20.2', '22.23.5'] as const;

/**
 * A Node.js binary from the npm registry's per-platform `node-<os>-<arch>` package (what the
 * `node` package installs), kept in CACHE_DIR/node/<version>/bin/node.
 */
export function nodeBinary(version: string): string {
  const dir = join(CACHE_DIR, 'node', version);
  const bin = join(dir, 'bin', 'node');
  if (existsSync(bin)) return bin;
  mkdirSync(join(CACHE_DIR, 'node'), { recursive: true });
  const tmp = mkdtempSync(join(CACHE_DIR, 'node', `.${version}-`));
  try {
    const name = `node-${process.platform}-${process.arch}@${version}`;
    const packed = sh('npm', ['pack', name, '--silent', '--pack-destination', tmp]).stdout.trim().split('\n').pop()!;
    mkdirSync(join(tmp, 'out'));
    sh('tar', ['-xzf', join(tmp, packed), '-C', join(tmp, 'out'), '--strip-components=1', 'package/bin/node']);
    try {
      renameSync(join(tmp, 'out'), dir);
    } catch (err) {
      // Another run got there first.
      if (!existsSync(bin)) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return bin;
}
