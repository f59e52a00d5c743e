import type { AgentContext } from '../context.js';
import { DEFAULT_FREEZE_LIMIT, DEFAULT_HOOK_TIMEOUT } from '../config/options.js';
import { FreezeController } from '../freeze/controller.js';
import { getFsInfo } from '../freeze/fsinfo.js';
import { FreezeHooks } from '../freeze/hooks.js';
import { loadFreezeBackend } from '../freeze/ioctl.js';
import { readMounts } from '../freeze/mounts.js';
import { MAX_LIMIT_SECONDS } from '../freeze/watchdog.js';
import type { JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import type { CommandFamily } from '../qapi/types.js';

/** QAPI downstream extension prefix (`__RFQDN_`) of this agent's own commands. */
export const EXTENSION_PREFIX = '__io.github.quiesce_';
export const SET_FREEZE_LIMIT = `${EXTENSION_PREFIX}set-freeze-limit`;
export const GET_FREEZE_RECORD = `${EXTENSION_PREFIX}get-freeze-record`;

const ns = (ms: number): bigint => BigInt(ms) * 1_000_000n;

/** Two families, registered apart as the reference registers the commands (guest-info's order). */
export interface FsfreezeFamilies {
  /** guest-fsfreeze-status/-freeze/-freeze-list/-thaw; thaws when the agent stops. */
  readonly freeze: CommandFamily;
  /** guest-get-fsinfo (registered after the network commands) and the watchdog extensions. */
  readonly fsinfo: CommandFamily;
}

/**
 * guest-fsfreeze-status/-freeze/-freeze-list/-thaw and guest-get-fsinfo as
 * qemu-ga 7.2 answers them, plus two extension commands for the watchdog.
 * Created before the other families touch the disk: a frozen-state marker
 * found here puts the agent in frozen mode from the start.
 */
export async function fsfreezeCommands(ctx: AgentContext): Promise<FsfreezeFamilies> {
  const { config, log } = ctx;
  const backend = loadFreezeBackend();
  const controller = new FreezeController({
    statedir: config.statedir,
    include: config.fsfreezeInclude,
    limitSeconds: config.fsfreezeLimit ?? DEFAULT_FREEZE_LIMIT,
    hooks: new FreezeHooks({
      path: config.fsfreezeHook,
      timeoutMs: (config.fsfreezeHookTimeout ?? DEFAULT_HOOK_TIMEOUT) * 1000,
      log,
    }),
    backend,
    log,
    setFrozen: (frozen) => ctx.setFrozen(frozen),
    isFrozen: () => ctx.isFrozen(),
    afterReply: (fn) => ctx.afterReply(fn),
  });
  // First, before this family logs anything: in frozen mode not even a log line may reach the disk.
  controller.recover();
  if (backend.name === 'addon') log({ kind: 'debug', message: 'fsfreeze: FIFREEZE/FITHAW through the addon' });
  else
    log({
      kind: 'warning',
      message: `fsfreeze: using fsfreeze(8), the addon is unavailable: ${backend.fallbackReason}`,
    });

  const freeze: CommandFamily = {
    commands: [
      { name: 'guest-fsfreeze-status', freezeSafe: true, run: () => controller.status() },
      { name: 'guest-fsfreeze-freeze', run: () => controller.freeze() },
      {
        name: 'guest-fsfreeze-freeze-list',
        args: [{ name: 'mountpoints', type: { list: 'str' }, optional: true }],
        run: (args) => controller.freeze(args['mountpoints'] as string[] | undefined),
      },
      { name: 'guest-fsfreeze-thaw', freezeSafe: true, run: () => controller.thaw() },
    ],
    prepareStop: () => controller.close(),
    close: () => controller.close(),
    crash: () => controller.crashThaw(),
  };
  const fsinfo: CommandFamily = {
    commands: [
      { name: 'guest-get-fsinfo', run: () => getFsInfo(readMounts()) },
      {
        name: SET_FREEZE_LIMIT,
        args: [{ name: 'seconds', type: 'int' }],
        run: (args) => {
          const seconds = args['seconds'] as bigint;
          if (seconds < 1n || seconds > BigInt(MAX_LIMIT_SECONDS)) {
            throw new QgaError(`Parameter 'seconds' expects a number of seconds from 1 to ${MAX_LIMIT_SECONDS}`);
          }
          controller.setNextLimit(Number(seconds));
        },
      },
      {
        name: GET_FREEZE_RECORD,
        // Read-only and in memory: safe, and useful, while frozen.
        freezeSafe: true,
        run: () => {
          const r = controller.record;
          if (!r) throw new QgaError('no freeze has been recorded since the agent started');
          const deadline = controller.deadline;
          const out: Record<string, JsonOut> = {
            start: ns(r.start),
            end: r.end === undefined ? undefined : ns(r.end),
            limit: r.limit,
            'thaw-deadline': deadline === undefined ? undefined : ns(deadline),
            'auto-thawed': r.autoThawed,
            frozen: r.frozen,
            thawed: r.thawed,
            mountpoints: [...r.mountpoints],
            recovered: r.recovered,
            error: r.error,
          };
          return out;
        },
      },
    ],
  };
  return { freeze, fsinfo };
}
