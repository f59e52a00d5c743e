import type { ResolvedConfig } from '../config/types.js';
import { DEFAULTS } from '../config/defaults.js';
import { QuiesceError } from '../errors.js';
import { findPoint, readCatalog } from '../repository/catalog.js';
import { formatVerify, verifyAndRecord, type VerifySpec } from '../verify/index.js';
import { EXIT } from '../workflow/exit-code.js';
import { SignalGuard } from '../workflow/signals.js';
import { givenRepository, resolveRepository, type RepositoryChoice } from './backups.js';
import type { CliContext } from './context.js';

export interface VerifyCliOptions extends RepositoryChoice {
  readonly at?: string | undefined;
  readonly kind?: string | undefined;
}

/**
 * What to verify with: --kind, or the guest's configured kind. fsck runs
 * without a config (with --repository); boot needs the guest's boot settings.
 */
export function verifySpec(config: ResolvedConfig | undefined, guest: string, kind: string | undefined): VerifySpec {
  if (kind !== undefined && kind !== 'fsck' && kind !== 'boot')
    throw new QuiesceError('CONFIG', `--kind ${JSON.stringify(kind)}: give fsck or boot`);
  if (config && !config.guests.has(guest))
    throw new QuiesceError(
      'CONFIG',
      `${config.source}: no guest named '${guest}' (guests: ${[...config.guests.keys()].join(', ') || 'none'})`,
    );
  const v = config?.guests.get(guest)?.verify;
  if (kind === 'fsck' || (kind === undefined && v?.kind === 'fsck'))
    return { kind: 'fsck', timeoutMs: v?.kind === 'fsck' ? v.timeoutMs : DEFAULTS.stepMs };
  const where = `${config?.source ?? 'the config'}: guests.${guest}.verify`;
  if (v?.kind === 'boot') return v;
  if (kind === 'boot')
    throw new QuiesceError(
      'CONFIG',
      `--kind boot needs the boot settings in ${where} (kind: boot, kernel, initrd, checks); ${v ? `it is kind ${v.kind}` : 'there is none'}`,
    );
  throw new QuiesceError(
    'CONFIG',
    `${where} is ${v ? 'a command (it runs in quiesce run)' : 'not set'}: pass --kind fsck, or configure kind fsck or boot`,
  );
}

/**
 * `quiesce verify GUEST`: fsck or boot of a restore point (the newest, or
 * --at), each check printed, the verdict written into its manifest. Exit 0
 * when it passes, 3 when it fails; a signal stops QEMU or the checker,
 * removes the temporary files and exits 128+n.
 */
export async function verifyGuest(ctx: CliContext, guest: string, o: VerifyCliOptions): Promise<number> {
  const config = o.repository !== undefined && o.kind === 'fsck' ? undefined : await ctx.loadConfig();
  const spec = verifySpec(config, guest, o.kind);
  const repo =
    o.repository !== undefined ? await givenRepository(o.repository) : resolveRepository(config!, guest, o.job);
  const point = findPoint(await readCatalog(repo, guest), o.at);
  // A signal stops the work and its clean-up runs; the exit is 128+n.
  const signals = new SignalGuard(ctx.log, 'stopping the verify and removing its temporary files').install();
  const controller = new AbortController();
  signals.register(controller);
  try {
    const result = await verifyAndRecord(point, spec, { log: ctx.log, signal: controller.signal });
    ctx.print(result, formatVerify(result));
    return result.ok ? EXIT.OK : EXIT.FAILED;
  } catch (err) {
    const code = signals.exitCode();
    if (code === undefined) throw err;
    process.stderr.write(`quiesce: ${(err as Error).message}\n`);
    return code;
  } finally {
    signals.uninstall();
  }
}
