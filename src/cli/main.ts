import { Command, CommanderError, Option } from 'commander';
import { defaultStateDir } from '../config/defaults.js';
import { MAX_BUDGET_MS, MAX_WAIT_MS, parseCliDuration } from '../config/duration.js';
import { exitTableText } from '../report/exit-codes.js';
import { EXIT, exitCodeForError } from '../workflow/exit-code.js';
import type { CliContext, GlobalOptions } from './context.js';
import { loadCommand, type LoadedCommand } from './load-command.js';
import { version } from '../version.js';

// Commander, the version and the exit table load with the CLI; every subcommand's modules load when it runs.
const runModule = () => import('./run.js');
const pruneModule = () => import('./prune.js');
const freezeModule = () => import('./freeze.js');
const inspectModule = () => import('./inspect.js');
const demoModule = () => import('./demo.js');
const backupsModule = () => import('./backups.js');
const verifyModule = () => import('./verify.js');
const noModule = () => Promise.resolve(undefined);

const VERSION = version();

/** Parses argv, runs the subcommand, returns the exit code (never calls process.exit itself). */
export async function main(argv: readonly string[]): Promise<number> {
  let code: number = EXIT.OK;
  const program = new Command('quiesce')
    .description('Freeze → snapshot → thaw for guests behind the QEMU guest agent, with every thaw proven.')
    .version(VERSION)
    .option(
      '-c, --config <file>',
      'config file (default: quiesce.config.{yaml,yml,json,js,mjs} or .quiescerc*, searched upwards)',
    )
    .option('--json', 'machine-readable output on stdout')
    .option('-v, --verbose', 'log debug events too')
    .option('-q, --quiet', 'no progress: no live display on a terminal, no progress log events')
    .addHelpText('after', `\nExit codes:\n${exitTableText()}\n`)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  // The command's context, so that an error's message never lands inside the live display.
  let ctx: CliContext | undefined;
  const ctxOf = (loaded: LoadedCommand<unknown>, cmd: Command): CliContext =>
    (ctx = new loaded.CliContext(cmd.optsWithGlobals<GlobalOptions>()));

  program
    .command('run [job]')
    .description('run a job: for each guest connect, preflight, freeze, snapshot, thaw (proven), backup, verify, prune')
    .option(
      '--wait <duration>',
      'wait this long for another run of the job to finish instead of failing (30, "30s", "2m")',
    )
    .option('--metrics-file <path>', 'write Prometheus textfile metrics here (node_exporter textfile collector)')
    .option('--demo', 'run the embedded demo job on a loop-mounted ext4 image (needs root; no config file)')
    .action(
      async (job: string | undefined, o: { wait?: string; metricsFile?: string; demo?: boolean }, cmd: Command) => {
        // Checked before anything else: bad input touches nothing.
        const waitMs =
          o.wait === undefined ? undefined : parseCliDuration('--wait', o.wait, { min: 0, max: MAX_WAIT_MS });
        if (o.demo) {
          const demo = await loadCommand(demoModule, { frozenWindow: true });
          code = await demo.impl.runDemo(ctxOf(demo, cmd));
          return;
        }
        const run = await loadCommand(runModule, { frozenWindow: true });
        const ctx = ctxOf(run, cmd);
        code = await run.impl.runJob(ctx, await ctx.loadConfig({ frozenWindow: true }), job, {
          ...(waitMs !== undefined ? { waitMs } : {}),
          ...(o.metricsFile ? { metricsFile: o.metricsFile } : {}),
        });
      },
    );

  program
    .command('plan [job]')
    .description('print exactly what run would do (resolved argv, timeouts), touching no guest')
    .action(async (job: string | undefined, _o: unknown, cmd: Command) => {
      const run = await loadCommand(runModule);
      const ctx = ctxOf(run, cmd);
      code = await run.impl.showPlan(ctx, await ctx.loadConfig(), job);
    });

  program
    .command('prune [job]')
    .description(
      "apply the guests' retention rules (keep last / daily / weekly / monthly; a repository's kept restore points keep their parents) now; --dry-run only lists",
    )
    .option('--dry-run', 'list what would be kept and removed, remove nothing')
    .action(async (job: string | undefined, o: { dryRun?: boolean }, cmd: Command) => {
      const pruner = await loadCommand(pruneModule);
      const ctx = ctxOf(pruner, cmd);
      code = await pruner.impl.pruneJob(ctx, await ctx.loadConfig(), job, o.dryRun === true);
    });

  program
    .command('backups [guest]')
    .description("list a guest's restore points, newest last (every guest with a repository when GUEST is omitted)")
    .option('--repository <dir>', "read this repository instead of the config's (no config file needed; needs GUEST)")
    .option('--job <job>', "the job that fills {job} in the repository's path (default: the only job with the guest)")
    .option('--all', 'also list backup folders that are not restore points, and why')
    .action(
      async (guest: string | undefined, o: { repository?: string; job?: string; all?: boolean }, cmd: Command) => {
        const backups = await loadCommand(backupsModule);
        code = await backups.impl.listBackups(ctxOf(backups, cmd), guest, o);
      },
    );

  program
    .command('restore <guest>')
    .description(
      'restore a backup (the newest, or --at) into DIR as one image per disk, never overwriting; each image is read back and compared with the backup',
    )
    .requiredOption('--to <dir>', 'the folder to write DISK.raw / DISK.qcow2 into (created when missing)')
    .option('--at <id|time>', 'a backup id, or the newest restore point at or before a time (ISO 8601)')
    .addOption(
      new Option(
        '--format <format>',
        'image format (raw by default: a restored disk is most often attached or dd-ed as raw)',
      )
        .choices(['raw', 'qcow2'])
        .default('raw'),
    )
    .option('--repository <dir>', "read this repository instead of the config's (no config file needed)")
    .option('--job <job>', "the job that fills {job} in the repository's path (default: the only job with the guest)")
    .action(
      async (
        guest: string,
        o: { to: string; at?: string; format: 'raw' | 'qcow2'; repository?: string; job?: string },
        cmd: Command,
      ) => {
        const backups = await loadCommand(backupsModule);
        code = await backups.impl.restoreGuest(ctxOf(backups, cmd), guest, o);
      },
    );

  program
    .command('verify <guest>')
    .description(
      "prove a restore point (the newest, or --at): fsck checks each filesystem read-only, boot starts it in a throwaway QEMU and checks it through its agent; never writes to the backup's images, records the verdict in its manifest (exit 0 passed, 3 failed)",
    )
    .option('--at <id|time>', 'a backup id, or the newest restore point at or before a time (ISO 8601)')
    .addOption(
      new Option('--kind <kind>', "fsck or boot (default: the guest's verify kind in the config)").choices([
        'fsck',
        'boot',
      ]),
    )
    .option('--repository <dir>', "read this repository instead of the config's (with --kind fsck no config is needed)")
    .option('--job <job>', "the job that fills {job} in the repository's path (default: the only job with the guest)")
    .action(
      async (guest: string, o: { at?: string; kind?: string; repository?: string; job?: string }, cmd: Command) => {
        const verify = await loadCommand(verifyModule);
        code = await verify.impl.verifyGuest(ctxOf(verify, cmd), guest, o);
      },
    );

  program
    .command('doctor [guests...]')
    .description(
      "check each guest's agent: reachable, in sync, freeze commands enabled, not frozen, round-trip time, filesystems",
    )
    .action(async (guests: string[], _o: unknown, cmd: Command) => {
      const inspect = await loadCommand(inspectModule);
      const ctx = ctxOf(inspect, cmd);
      code = await inspect.impl.doctor(ctx, await ctx.loadConfig(), guests);
    });

  program
    .command('status')
    .description('who is frozen (live status and the journal) and how the last run ended')
    .action(async (_o: unknown, cmd: Command) => {
      const inspect = await loadCommand(inspectModule);
      const ctx = ctxOf(inspect, cmd);
      code = await inspect.impl.status(ctx, await ctx.loadConfig());
    });

  program
    .command('freeze')
    .description(
      "freeze a guest (or this machine), run CMD, thaw, exit with CMD's status: quiesce freeze --guest G -- CMD ARGS…",
    )
    .option('--guest <name>', 'a guest of the config')
    .option('--local', 'this machine, through a local quiesce-agent (needs --mountpoint)')
    .option('--mountpoint <path...>', "filesystems to freeze (default: the guest's freeze list)")
    .addOption(new Option('--budget <duration>', 'longest time CMD may run frozen (default 10s)'))
    .argument('[cmd...]', 'the command to run while frozen (after --)')
    .action(
      async (
        cmdArgs: string[],
        o: { guest?: string; local?: boolean; mountpoint?: string[]; budget?: string },
        cmd: Command,
      ) => {
        const budgetMs =
          o.budget === undefined ? undefined : parseCliDuration('--budget', o.budget, { min: 1, max: MAX_BUDGET_MS });
        const withConfig = !!(o.guest || cmd.optsWithGlobals<GlobalOptions>().config);
        const freeze = await loadCommand(freezeModule, { frozenWindow: true, config: withConfig });
        const ctx = ctxOf(freeze, cmd);
        const config = withConfig ? await ctx.loadConfig({ frozenWindow: true }) : undefined;
        code = await freeze.impl.freezeAndRun(ctx, config, cmdArgs, {
          ...(o.guest ? { guest: o.guest } : {}),
          ...(o.local ? { local: true } : {}),
          ...(o.mountpoint ? { mountpoint: o.mountpoint } : {}),
          ...(budgetMs !== undefined ? { budgetMs } : {}),
          stateDir: config?.stateDir ?? defaultStateDir(),
        });
      },
    );

  program
    .command('thaw <guest>')
    .description(
      "emergency: thaw a guest now and prove it; refuses at once, naming the owner, while another quiesce process holds the guest's channel",
    )
    .option('--force', 'terminate the quiesce process holding the channel (SIGTERM, SIGKILL after 2 s), then thaw')
    .action(async (guest: string, o: { force?: boolean }, cmd: Command) => {
      const inspect = await loadCommand(inspectModule);
      const ctx = ctxOf(inspect, cmd);
      const config = await ctx.loadConfig();
      code = await inspect.impl.thaw(ctx, config, guest, o.force === true);
    });

  program
    .command('recover')
    .description('thaw every guest a crashed run left frozen (from the journal), and nothing else')
    .action(async (_o: unknown, cmd: Command) => {
      const ctx = ctxOf(await loadCommand(noModule), cmd);
      const config = await ctx.loadConfig();
      const results = await ctx.recover(config.stateDir);
      const text = results.length
        ? results
            .map(
              (r) =>
                `${r.guest} (run ${r.runId}): ${r.ok ? `thawed ${r.thawed}` : r.busy ? `NOT TOUCHED: ${r.error}` : `FAILED: ${r.error}`}`,
            )
            .join('\n')
        : 'nothing to recover';
      ctx.print(results, `${text}\n`);
      code = results.some((r) => !r.ok && !r.busy)
        ? EXIT.THAW_UNPROVEN
        : results.some((r) => r.busy)
          ? EXIT.LOCKED
          : EXIT.OK;
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    ctx?.progress.end();
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.CONFIG;
    const isUsage = (err as { usage?: boolean }).usage === true;
    process.stderr.write(`quiesce: ${(err as Error).message}\n`);
    return isUsage ? EXIT.CONFIG : exitCodeForError(err);
  }
}
