// sshd on a loopback port for the qemu+ssh e2e tests: a fresh host key and one authorized key for root
// (Debian's openssh-server).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const SSHD = '/usr/sbin/sshd';

export interface LoopbackSshd {
  readonly port: number;
  /** The client's private key (for `keyfile=`). */
  readonly key: string;
  readonly child: ChildProcess;
  /** A qemu+ssh URI to this machine's qemu:///system through this sshd. */
  uri(): string;
  stop(): Promise<void>;
}

/** Why no loopback sshd can run here, or undefined. */
export function sshdUnavailable(): string | undefined {
  return existsSync(SSHD) ? undefined : `no ${SSHD} (openssh-server)`;
}

/** Starts sshd on 127.0.0.1 (a port from the pid, offset by `portOffset`) with its files in `dir`. */
export async function startSshd(dir: string, portOffset = 0): Promise<LoopbackSshd> {
  const key = join(dir, 'client_key');
  for (const k of ['host_key', 'client_key'])
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, k)], { stdio: 'ignore' });
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${key}.pub`, 'utf8'));
  const port = 20000 + ((process.pid + portOffset) % 20000);
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'StrictModes no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'UsePAM no',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  spawnSync('mkdir', ['-p', '/run/sshd']); // privilege separation directory
  const child = spawn(SSHD, ['-f', config, '-D', '-e'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const c = createConnection(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), resolve(true)));
      c.once('error', () => resolve(false));
    });
    if (up) break;
    if (i > 50 || child.exitCode !== null) {
      child.kill('SIGTERM');
      throw new Error(`sshd did not start: ${err}`);
    }
    await sleep(100);
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  const uri = (): string => `qemu+ssh://root@127.0.0.1:${port}/system?keyfile=${key}&no_verify=1`;
  return { port, key, child, uri, stop };
}
