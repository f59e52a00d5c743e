// Shared by the fsfreeze process tests: agents restricted to the test's own loop mounts, and a client.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startAgent, type RunningAgent, type StartOptions } from '../../helpers/agents.js';
import type { LoopMount } from '../../helpers/loop-mounts.js';
import { Wire } from '../../helpers/wire.js';

export type Reply = { return: unknown } | { error: { class: string; desc: string } };

/** A running agent and one connection to it. */
export interface Client {
  readonly agent: RunningAgent;
  call(execute: string, args?: unknown): Promise<Reply>;
  /** The `return` of a successful reply (fails the test on an error reply). */
  ok<T = unknown>(execute: string, args?: unknown): Promise<T>;
  close(): Promise<void>;
}

/**
 * quiesce-agent limited to `include` (so even a bare guest-fsfreeze-freeze
 * can only touch the test's mounts). The caller closes it in `after`/finally.
 */
export async function ours(include: readonly string[], opts: StartOptions = {}): Promise<Client> {
  // An agent started outside the mounts' namespace sees them as plain directories (not mounts) and freezes nothing.
  return connect(
    await startAgent('quiesce', { ...opts, args: [`--fsfreeze-include=${include.join(',')}`, ...(opts.args ?? [])] }),
  );
}

/** The reference qemu-ga. Send it freeze-list with the test's mountpoints only, never a bare freeze. */
export async function reference(opts: StartOptions = {}): Promise<Client> {
  return connect(await startAgent('qemu-ga', opts));
}

export async function connect(agent: RunningAgent): Promise<Client> {
  let wire: Wire;
  try {
    wire = await Wire.open(agent.socket);
  } catch (err) {
    await agent.stop();
    throw err;
  }
  const call = async (execute: string, args?: unknown): Promise<Reply> => (await wire.call(execute, args)) as Reply;
  return {
    agent,
    call,
    ok: async <T>(execute: string, args?: unknown): Promise<T> => {
      const r = await call(execute, args);
      if (!('return' in r)) throw new Error(`${execute}: ${JSON.stringify(r)}`);
      return r.return as T;
    },
    close: async () => {
      wire.close();
      await agent.stop();
    },
  };
}

export const markerOf = (statedir: string): string => join(statedir, 'qga.state.isfrozen');

/** The marker as the reference makes it: present, empty, mode 0600. */
export function markerState(statedir: string): 'absent' | 'ok' | string {
  const path = markerOf(statedir);
  if (!existsSync(path)) return 'absent';
  const st = statSync(path);
  return st.size === 0 && (st.mode & 0o777) === 0o600 ? 'ok' : `size ${st.size} mode ${(st.mode & 0o777).toString(8)}`;
}

/** Polls `fn` until it returns true or `ms` passes; returns whether it did. */
export async function waitFor(fn: () => boolean | Promise<boolean>, ms: number, every = 50): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(every);
  }
}

/** The commands qemu-ga 7.2 keeps enabled while frozen. */
export const FREEZE_SAFE = [
  'guest-fsfreeze-status',
  'guest-fsfreeze-thaw',
  'guest-info',
  'guest-ping',
  'guest-sync',
  'guest-sync-delimited',
];

export const frozenText = (command: string): Reply => ({
  error: { class: 'CommandNotFound', desc: `Command ${command} has been disabled: the agent is in frozen state` },
});

/** guest-info's enabled commands. */
export async function enabledCommands(c: Client): Promise<string[]> {
  const info = await c.ok<{ supported_commands: { name: string; enabled: boolean }[] }>('guest-info');
  return info.supported_commands
    .filter((x) => x.enabled)
    .map((x) => x.name)
    .sort();
}

/** Start options that put an agent where the mounts are (their private mount namespace). */
export function inNs(mounts: readonly LoopMount[], opts: StartOptions = {}): StartOptions {
  return { ...opts, wrap: mounts[0]?.wrap ?? [] };
}
