import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { QuiesceError } from '../errors.js';
import { describeConnector } from '../config/connector.js';
import { guestAgent } from '../guest/connect.js';
import { acquireGuestLock } from '../guest/lock.js';
import type { ResolvedConfig, ResolvedGuest } from '../config/types.js';
import { Journal, ownerAlive } from '../workflow/journal.js';
import { emergencyThaw } from '../workflow/emergency.js';
import { preflight } from '../workflow/preflight.js';
import type { LibvirtCheck } from '../snapshot/libvirt/doctor.js';
import { stoppedNote } from '../process/pid.js';
import type { RunReport } from '../workflow/results.js';
import { EXIT } from '../workflow/exit-code.js';
import type { CliContext } from './context.js';

function guestsNamed(config: ResolvedConfig, names: readonly string[]): ResolvedGuest[] {
  if (names.length === 0) return [...config.guests.values()];
  return names.map((n) => {
    const g = config.guests.get(n);
    if (!g) throw new QuiesceError('CONFIG', `no guest named '${n}' in ${config.source}`);
    return g;
  });
}

interface DoctorResult {
  guest: string;
  address: string;
  ok: boolean;
  reachable: boolean;
  agentVersion?: string;
  rttMs?: number;
  status?: string;
  missingCommands?: string[];
  watchdog?: boolean;
  mountpoints?: string[];
  notMounted?: string[];
  /** libvirt guests: transport, connection, domain, channel, and for the libvirt provider its disks and targets. */
  libvirt?: LibvirtCheck[];
  error?: string;
}

/** `quiesce doctor [GUEST…]`: can every guest's agent be trusted with a schedule? */
export async function doctor(ctx: CliContext, config: ResolvedConfig, names: readonly string[]): Promise<number> {
  const results = await Promise.all(guestsNamed(config, names).map((g) => checkGuest(ctx, g)));
  const text = results
    .map((r) => {
      const head = `${r.ok ? 'ok    ' : 'FAILED'} ${r.guest} (${r.address})`;
      if (!r.reachable) return `${head}: unreachable: ${r.error}`;
      const parts = [
        `agent ${r.agentVersion}`,
        `rtt ${r.rttMs?.toFixed(2)} ms`,
        `status ${r.status}`,
        r.watchdog ? 'freeze watchdog available' : 'no freeze watchdog',
      ];
      if (r.missingCommands?.length) parts.push(`missing/disabled: ${r.missingCommands.join(', ')}`);
      if (r.mountpoints) parts.push(`filesystems: ${r.mountpoints.join(' ')}`);
      if (r.notMounted?.length) parts.push(`NOT MOUNTED: ${r.notMounted.join(' ')}`);
      for (const c of r.libvirt ?? []) parts.push(`${c.ok ? '' : 'FAILED '}${c.name}: ${c.detail}`);
      if (r.error) parts.push(r.error);
      return `${head}: ${parts.join('; ')}`;
    })
    .join('\n');
  ctx.print(results, `${text}\n`);
  const bad = results.filter((r) => !r.ok).length;
  return bad === 0 ? EXIT.OK : bad === results.length ? EXIT.FAILED : EXIT.PARTIAL;
}

async function checkGuest(ctx: CliContext, g: ResolvedGuest): Promise<DoctorResult> {
  const r: DoctorResult = { guest: g.name, address: describeConnector(g.connector), ok: false, reachable: false };
  let lock;
  try {
    lock = await acquireGuestLock(r.address, 0);
  } catch (err) {
    r.error = (err as Error).message;
    return r;
  }
  const agent = await guestAgent(g.connector, { maxReplyBytes: g.maxReplyBytes, onEvent: ctx.log });
  try {
    await agent.execute('guest-ping', undefined, { timeoutMs: g.timeouts.connectMs });
    r.reachable = true;
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) await agent.execute('guest-ping');
    r.rttMs = (performance.now() - t0) / 5;
    const found = await preflight(agent, { guest: g.name, freeze: g.freeze, timeoutMs: g.timeouts.commandMs });
    r.agentVersion = found.caps.version;
    r.watchdog = found.watchdog;
    r.missingCommands = [...found.missingCommands];
    if (found.status !== undefined) r.status = found.status;
    if (found.mountpoints) r.mountpoints = [...found.mountpoints];
    if (g.freeze !== 'all' && found.mountpoints) r.notMounted = [...found.notMounted];
    r.ok = found.problems.length === 0;
  } catch (err) {
    r.error = (err as Error).message;
  } finally {
    await agent.close().catch(() => undefined);
    await lock.release();
  }
  const libvirt = await (await import('../snapshot/libvirt/doctor.js')).libvirtChecks(g);
  if (libvirt.length) {
    r.libvirt = libvirt;
    if (libvirt.some((c) => !c.ok)) r.ok = false;
  }
  return r;
}

/** `quiesce status`: who is frozen (journal and live status) and the last run. */
export async function status(ctx: CliContext, config: ResolvedConfig): Promise<number> {
  const { records, unreadable } = new Journal(config.stateDir).list();
  const journal = records.map((r) => {
    const running = ownerAlive(r);
    return {
      guest: r.guest,
      runId: r.runId,
      pid: r.pid,
      ownerRunning: running,
      ownerStopped: running && stoppedNote(r.pid) !== undefined,
      since: r.startedAt,
    };
  });
  const live = await Promise.all(
    [...config.guests.values()].map(async (g) => {
      const agent = await guestAgent(g.connector, { maxReplyBytes: g.maxReplyBytes });
      try {
        return {
          guest: g.name,
          status: String(await agent.execute('guest-fsfreeze-status', undefined, { timeoutMs: 3000 })),
        };
      } catch (err) {
        return { guest: g.name, status: 'unreachable', error: (err as Error).message };
      } finally {
        await agent.close().catch(() => undefined);
      }
    }),
  );
  let last: RunReport | undefined;
  try {
    last = JSON.parse(readFileSync(join(config.stateDir, 'last.json'), 'utf8')) as RunReport;
  } catch {
    last = undefined;
  }
  const lines = live.map((l) => `  ${l.status.padEnd(11)} ${l.guest}${'error' in l ? ` (${l.error})` : ''}`);
  for (const j of journal)
    lines.push(
      `  journal: ${j.guest} frozen by run ${j.runId} (pid ${j.pid}, ${j.ownerRunning ? `still running${j.ownerStopped ? ', STOPPED' : ''}: quiesce thaw ${j.guest} --force takes over` : 'gone, and recovery could not thaw it: quiesce thaw ' + j.guest}, since ${j.since})`,
    );
  for (const u of unreadable) lines.push(`  journal: unreadable record ${u}`);
  lines.push(
    last
      ? `last run: job ${last.job} ${last.runId} ended ${last.endedAt}, exit ${last.exitCode}`
      : 'last run: none recorded',
  );
  ctx.print({ guests: live, journal, unreadable, lastRun: last ?? null }, `${lines.join('\n')}\n`);
  // Recovery ran before this command: a dead owner's record still here is a guest it could not thaw.
  if (journal.some((j) => !j.ownerRunning) || unreadable.length) return EXIT.THAW_UNPROVEN;
  return live.some((l) => l.status === 'frozen') || journal.length ? EXIT.PARTIAL : EXIT.OK;
}

/** `quiesce thaw GUEST [--force]`: the emergency brake (workflow/emergency.ts). */
export async function thaw(ctx: CliContext, config: ResolvedConfig, name: string, force: boolean): Promise<number> {
  const g = guestsNamed(config, [name])[0]!;
  const r = await emergencyThaw(g, {
    stateDir: config.stateDir,
    log: ctx.log,
    force,
    agent: (x) => guestAgent(x.connector, { maxReplyBytes: x.maxReplyBytes, onEvent: ctx.log }),
  });
  const took = r.tookOverFrom
    ? `took over from pid ${r.tookOverFrom.pid} (${r.tookOverFrom.command}${r.tookOverFrom.killed ? ', SIGKILLed after it did not exit' : ', exited on SIGTERM'}); `
    : '';
  const json = {
    guest: g.name,
    proven: r.outcome.proven,
    thawed: r.outcome.thawed ?? null,
    ...(r.tookOverFrom ? { tookOverFrom: r.tookOverFrom } : {}),
    ...(r.outcome.error ? { error: r.outcome.error.message } : {}),
  };
  if (r.outcome.proven) {
    ctx.print(json, `${g.name}: ${took}thawed ${r.outcome.thawed ?? 0} filesystem(s); status thawed\n`);
    return EXIT.OK;
  }
  ctx.print(json, `${g.name}: ${took}THAW FAILED: ${r.outcome.error?.message ?? 'not proven'}\n`);
  return EXIT.THAW_UNPROVEN;
}
