/**
 * Runs an agent where guest-shutdown and guest-suspend-* cannot reach the
 * machine: in a private mount namespace, a recording stub is bind-mounted
 * over /sbin/shutdown, systemctl and any pm-utils program, a temporary file
 * over /sys/power/state, and PATH holds only the stub's directory. The
 * namespace checks its own mounts before it starts the agent, and `verify()`
 * checks them again from outside before a test may send anything.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import { LineClient } from './file-rig.js';

const SYSTEM_DIRS = ['/sbin', '/usr/sbin', '/bin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin'];
const STUBBED_NAMES = ['shutdown', 'systemctl', 'pm-is-supported', 'pm-suspend', 'pm-hibernate', 'pm-suspend-hybrid'];
/** What the stub's directory on PATH may provide. */
export const HELPERS = ['systemctl', 'pm-is-supported', 'pm-suspend', 'pm-hibernate', 'pm-suspend-hybrid'] as const;

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Why the power tests cannot run here, or false. */
export function powerSkipReason(): string | false {
  if (!isRoot()) return 'needs root for a private mount namespace with stubs over /sbin/shutdown and systemctl';
  if (!which('unshare') || !which('nsenter')) return 'needs unshare and nsenter (util-linux)';
  if (!existsSync('/sbin/shutdown')) return 'needs /sbin/shutdown to exist, so that a stub can be mounted over it';
  if (!existsSync('/sys/power/state')) return 'needs /sys/power/state to exist, so that a file can be mounted over it';
  return false;
}

/** Every system path a power command could execute, that exists here. */
function pathsToStub(): string[] {
  return SYSTEM_DIRS.flatMap((d) => STUBBED_NAMES.map((n) => join(d, n))).filter((p) => existsSync(p));
}

/**
 * The stub: shell builtins only, it never starts another program. It logs
 * its path and arguments, whether it leads its own session (setsid), whether
 * stdin/stdout/stderr are /dev/null and a marker from the environment, then
 * exits or kills itself as `config` says.
 */
function stubScript(dir: string): string {
  return `#!/bin/sh
dir='${dir}'
. "$dir/config"
name=\${0##*/}
first=\${1-}
line="$0"
for a in "$@"; do line="$line|$a"; done
read -r stat < /proc/$$/stat
rest=\${stat##*) }
set -- $rest
if [ "$4" = "$$" ]; then session=own; else session=inherited; fi
io=
for fd in 0 1 2; do if [ /proc/$$/fd/$fd -ef /dev/null ]; then io="\${io}n"; else io="\${io}-"; fi; done
printf '%s|session=%s|io=%s|env=%s\\n' "$line" "$session" "$io" "\${STUB_MARK-}" >> "$dir/log"
sig=
case "$name" in
  shutdown) sig=\${SHUTDOWN_SIGNAL-}; code=\${SHUTDOWN_EXIT-0};;
  systemctl) if [ "$first" = status ]; then code=\${SYSTEMCTL_STATUS-4}; else sig=\${SYSTEMCTL_SIGNAL-}; code=\${SYSTEMCTL_EXIT-0}; fi;;
  pm-is-supported) code=\${PM_IS_SUPPORTED-1};;
  *) sig=\${PM_SIGNAL-}; code=\${PM_EXIT-0};;
esac
if [ -n "$sig" ]; then kill -s "$sig" $$; fi
exit "$code"
`;
}

/** Runs inside the new mount namespace, then execs the agent. */
function setupScript(dir: string, targets: readonly string[]): string {
  const mounts = targets.map((t) => `mount --bind "$stub" '${t}'`).join('\n');
  const checks = pathsToStub()
    .map((p) => `cmp -s "$stub" '${p}' || { echo "stub not in place at ${p}" >&2; exit 97; }`)
    .join('\n');
  return `set -eu
stub='${dir}/stub'
${mounts}
mount --bind '${dir}/power-state' /sys/power/state
${checks}
cmp -s '${dir}/power-state' /sys/power/state || { echo 'power-state not in place' >&2; exit 97; }
export PATH='${dir}/bin'
exec "$@"
`;
}

/** How the stubs behave in one scenario. */
export interface StubConfig {
  /** Which helpers PATH provides (default: all). */
  present?: readonly (typeof HELPERS)[number][];
  SHUTDOWN_EXIT?: number;
  SHUTDOWN_SIGNAL?: string;
  SYSTEMCTL_STATUS?: number;
  SYSTEMCTL_EXIT?: number;
  SYSTEMCTL_SIGNAL?: string;
  PM_IS_SUPPORTED?: number;
  PM_EXIT?: number;
  PM_SIGNAL?: string;
  /** What /sys/power/state (the file over it) holds. */
  powerState?: string;
}

/** One program run by the agent, as the stub logged it. */
export interface StubCall {
  readonly argv: string[];
  readonly session: string;
  readonly io: string;
  readonly env: string;
}

export interface Outcome {
  /** Reply lines to the command (before the guest-sync that follows it). */
  readonly replies: string[];
  readonly calls: StubCall[];
  /** /sys/power/state after the command, as the agent saw it. */
  readonly powerState: string;
}

export class PowerRig {
  private syncId = 9_100_000_000;

  private constructor(
    readonly dir: string,
    readonly agent: RunningAgent,
    readonly client: LineClient,
  ) {}

  static async start(kind: AgentKind): Promise<PowerRig> {
    const dir = mkdtempSync(join(tmpdir(), `quiesce-power-${kind}-`));
    writeFileSync(join(dir, 'stub'), stubScript(dir));
    chmodSync(join(dir, 'stub'), 0o755);
    mkdirSync(join(dir, 'bin'));
    writeFileSync(join(dir, 'config'), '');
    writeFileSync(join(dir, 'log'), '');
    writeFileSync(join(dir, 'power-state'), '');
    const targets = [...new Set(pathsToStub().map((p) => realpathSync(p)))];
    writeFileSync(join(dir, 'setup.sh'), setupScript(dir, targets));
    let agent: RunningAgent;
    try {
      agent = await startAgent(kind, {
        wrap: ['unshare', '--mount', '--propagation', 'private', 'sh', join(dir, 'setup.sh')],
        env: { STUB_MARK: 'inherited' },
      });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const rig = new PowerRig(dir, agent, await LineClient.open(agent.socket));
    rig.verify();
    return rig;
  }

  /**
   * Checks from outside, in the agent's own mount namespace, that every path
   * a power command could execute is the stub and /sys/power/state is the
   * temporary file. Throws (and the test sends nothing) otherwise.
   */
  verify(): void {
    const pid = String(this.agent.child.pid);
    const ownNs = readlinkNs('self');
    if (readlinkNs(pid) === ownNs) throw new Error('the agent is not in a mount namespace of its own');
    const checks = [
      ...pathsToStub().map((p) => [join(this.dir, 'stub'), p]),
      [join(this.dir, 'power-state'), '/sys/power/state'],
    ];
    for (const [mine, theirs] of checks) {
      const r = spawnSync('nsenter', ['-t', pid, '--mount', '--', 'cmp', '-s', mine!, theirs!]);
      if (r.status !== 0) throw new Error(`${theirs} is not the stub in the agent's namespace: refusing to go on`);
    }
  }

  configure(config: StubConfig): void {
    const { present = HELPERS, powerState = '', ...vars } = config;
    writeFileSync(
      join(this.dir, 'config'),
      Object.entries(vars)
        .map(([k, v]) => `${k}=${String(v)}\n`)
        .join(''),
    );
    for (const name of HELPERS) {
      const link = join(this.dir, 'bin', name);
      if (existsSync(link)) unlinkSync(link);
      if (present.includes(name)) symlinkSync('../stub', link);
    }
    writeFileSync(join(this.dir, 'power-state'), powerState);
    writeFileSync(join(this.dir, 'log'), '');
  }

  /** Sends the command, then guest-sync; returns what came before the sync's reply and what the stubs logged. */
  async send(execute: string, args?: unknown): Promise<Outcome> {
    this.verify();
    const id = this.syncId++;
    this.client.send(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }));
    this.client.send(JSON.stringify({ execute: 'guest-sync', arguments: { id } }));
    const replies: string[] = [];
    for (let line = await this.client.line(); line !== `{"return": ${id}}`; line = await this.client.line()) {
      replies.push(line);
    }
    const calls = readFileSync(join(this.dir, 'log'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => {
        const parts = l.split('|');
        const field = (k: string): string => parts.find((p) => p.startsWith(`${k}=`))!.slice(k.length + 1);
        return {
          argv: parts.filter((p) => !/^(session|io|env)=/.test(p)).map((p) => p.replace(this.dir, '$DIR')),
          session: field('session'),
          io: field('io'),
          env: field('env'),
        };
      });
    return { replies, calls, powerState: readFileSync(join(this.dir, 'power-state'), 'latin1') };
  }

  async stop(): Promise<void> {
    this.client.close();
    await this.agent.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function readlinkNs(pid: string): string {
  return spawnSync('readlink', [`/proc/${pid}/ns/mnt`])
    .stdout.toString()
    .trim();
}
