import { posix } from 'node:path';
import { z } from 'zod';
import { checkDuration, DURATION_FORMS, DURATION_RANGES, type DurationRange } from './duration.js';

/**
 * Milliseconds from "10s" / 10 / "500ms", within `range`: a zero budget, a
 * 1e300 s timeout or "1000h" is refused here, before any guest is touched.
 */
export function durationIn(range: DurationRange) {
  return z
    .union([z.number(), z.string()], {
      errorMap: (_issue, ctx) => ({ message: `not a duration: ${JSON.stringify(ctx.data)} (${DURATION_FORMS})` }),
    })
    .transform((v, ctx) => {
      const r = checkDuration(v, range);
      if ('problem' in r) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: r.problem });
        return z.NEVER;
      }
      return r.ms;
    });
}

const budget = durationIn(DURATION_RANGES.budget);
const agentTimeout = durationIn(DURATION_RANGES.agent);
const stepTimeout = durationIn(DURATION_RANGES.step);

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'names use letters, digits, ".", "_" and "-"');
const argv = z.array(z.string()).min(1, 'an argv list needs at least the program');
const absPath = z.string().startsWith('/', 'must be an absolute path');

const step = z.object({ argv, timeout: stepTimeout.optional() }).strict();

/** What a booted restore point must show through its agent. */
const bootChecks = z
  .object({
    /** Mountpoints guest-get-fsinfo must list. */
    mountpoints: z.array(absPath).optional(),
    /** Files read through guest-file-read whose sha256 must match. */
    files: z
      .array(
        z.object({ path: absPath, sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'a sha256: 64 hex digits') }).strict(),
      )
      .optional(),
    /** Commands run through guest-exec that must exit 0. */
    commands: z.array(argv).optional(),
  })
  .strict();

/**
 * The verify step: a command (argv, as before), or a check of the backup the
 * run made in the guest's repository: fsck (read-only filesystem checks
 * through a temporary overlay) or boot (a throwaway QEMU, direct kernel boot).
 */
const verify = z.discriminatedUnion(
  'kind',
  [
    z.object({ kind: z.literal('command').optional(), argv, timeout: stepTimeout.optional() }).strict(),
    z.object({ kind: z.literal('fsck'), timeout: stepTimeout.optional() }).strict(),
    z
      .object({
        kind: z.literal('boot'),
        /** Direct boot: the kernel, initrd and command line QEMU starts the restored disks with. */
        kernel: absPath,
        initrd: absPath,
        append: z.string().optional(),
        /** Guest memory in MiB (default 1024). */
        memory: z.number().int().min(64).max(1_048_576).optional(),
        cpus: z.number().int().min(1).max(64).optional(),
        /** From starting QEMU to the last check (default 5m). */
        timeout: stepTimeout.optional(),
        checks: bootChecks.optional(),
      })
      .strict(),
  ],
  {
    errorMap: (issue, ctx) =>
      issue.code === 'invalid_union_discriminator'
        ? {
            message: `must be 'fsck' or 'boot' (or leave kind out and give argv), got ${JSON.stringify((ctx.data as { kind?: unknown } | undefined)?.kind)}`,
          }
        : { message: ctx.defaultError },
  },
);

// "/var/" and "/var" are one mountpoint.
const samePath = (p: string) => posix.normalize(p).replace(/(.)\/+$/, '$1');

/** Mountpoints to freeze, or "all" (every freezable filesystem the agent sees). Required: "all" is a choice, not a default. */
const freeze = z.union(
  [
    z.literal('all'),
    z
      .array(absPath)
      .min(1, 'list at least one mountpoint, or say "all"')
      .superRefine((list, ctx) => {
        const seen = new Map<string, number>();
        list.forEach((m, i) => {
          const first = seen.get(samePath(m));
          if (first === undefined) seen.set(samePath(m), i);
          // The agent would freeze it twice: the second FIFREEZE fails with EBUSY.
          else
            ctx.addIssue({
              code: z.ZodIssueCode.custom,
              path: [i],
              message: `${m} is listed twice (first at freeze[${first}])`,
            });
        });
      }),
  ],
  {
    errorMap: (_issue, ctx) => ({
      message:
        ctx.data === undefined
          ? 'required: list the mountpoints to freeze, or "all"'
          : `must be "all" or a list of absolute mountpoints (got ${JSON.stringify(ctx.data)})`,
    }),
  },
);

const connector = z.discriminatedUnion('type', [
  z.object({ type: z.literal('socket'), path: absPath }).strict(),
  z.object({ type: z.literal('tcp'), host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict(),
  z.object({ type: z.literal('local'), agentArgs: z.array(z.string()).optional() }).strict(),
  z.object({ type: z.literal('libvirt'), domain: z.string().min(1), uri: z.string().min(1).optional() }).strict(),
]);

/** "all", or a list of disk names (each once); `what` says what a name is, for the error. */
const diskSelection = (what: string) =>
  z.union([
    z.literal('all'),
    z
      .array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, `${what}: letters, digits, ".", "_", "-"`))
      .min(1, 'list at least one disk, or say "all"')
      .refine((d) => new Set(d).size === d.length, 'a disk is listed twice'),
  ]);

/** A backup repository's keys (providers qmp and libvirt, mode backup). */
const repositoryFields = {
  /** Backup mode: chains of qcow2 images with manifests under DIR/GUEST/ (placeholders {guest} {job} {stateDir}). */
  repository: absPath.optional(),
  /** With a repository: full, incremental, differential, or auto (default: a full when a chain cannot go on). */
  level: z.enum(['auto', 'full', 'incremental', 'differential']).optional(),
  /** With level auto: start a new chain after this many backups in it, or once its full is this old. */
  fullEvery: z
    .object({
      backups: z.number().int().min(1).max(10_000).optional(),
      age: durationIn(DURATION_RANGES.chainAge).optional(),
    })
    .strict()
    .refine((f) => f.backups !== undefined || f.age !== undefined, 'set backups, age, or both')
    .optional(),
};

const snapshot = z.discriminatedUnion('provider', [
  z.object({ provider: z.literal('command'), argv, timeout: stepTimeout.optional() }).strict(),
  z
    .object({
      provider: z.literal('qmp'),
      /** QEMU's QMP unix socket. */
      socket: absPath,
      mode: z.enum(['backup', 'snapshot']).optional(),
      /** Node names or device ids (as query-block shows them), or "all". */
      disks: diskSelection('a node name or device id').optional(),
      /** One file per disk; placeholders as in argv plus {disk}. Or give a repository. */
      target: absPath.optional(),
      ...repositoryFields,
      format: z.enum(['raw', 'qcow2']).optional(),
      /** How long the copy may take after the thaw. */
      timeout: stepTimeout.optional(),
    })
    .strict(),
  z
    .object({
      /** Through libvirt, for the domain (and URI) of the guest's libvirt connector. */
      provider: z.literal('libvirt'),
      /** backup: a push backup job (default); snapshot: external disk-only overlays. */
      mode: z.enum(['backup', 'snapshot']).optional(),
      /** Target device names as the domain XML has them (vda, sdb), or "all". */
      disks: diskSelection('a target device name like vda').optional(),
      /** One file per disk (the backup copy, or the overlay); placeholders as in argv plus {disk}. Or give a repository (mode backup). */
      target: absPath.optional(),
      ...repositoryFields,
      format: z.enum(['raw', 'qcow2']).optional(),
      /** Snapshot mode: merge each overlay back after the later steps (default true); false keeps it. */
      commit: z.boolean().optional(),
      /** How long the copy (backup) or the merge (snapshot) may take after the thaw. */
      timeout: stepTimeout.optional(),
    })
    .strict(),
]);

const prune = z
  .object({
    /** Backup files: the folder (with a repository, leave dir and match out: the rules apply to its restore points). */
    dir: absPath.optional(),
    /** Only names matching this pattern (with placeholders) are backups of this guest. */
    match: z.string().min(1).optional(),
    keepLast: z.number().int().min(0).optional(),
    keepDaily: z.number().int().min(0).optional(),
    keepWeekly: z.number().int().min(0).optional(),
    keepMonthly: z.number().int().min(0).optional(),
  })
  .strict()
  .refine((p) => (p.keepLast ?? 0) + (p.keepDaily ?? 0) + (p.keepWeekly ?? 0) + (p.keepMonthly ?? 0) > 0, {
    message: 'prune must keep something: set keepLast, keepDaily, keepWeekly or keepMonthly',
  });

const timeouts = z
  .object({
    connect: agentTimeout.optional(),
    freeze: agentTimeout.optional(),
    thaw: agentTimeout.optional(),
    command: agentTimeout.optional(),
    step: stepTimeout.optional(),
  })
  .strict();

export const guestSchema = z
  .object({
    connector,
    freeze,
    hooks: z
      .object({ pre: z.array(argv).optional(), post: z.array(argv).optional() })
      .strict()
      .optional(),
    snapshot,
    backup: step.optional(),
    verify: verify.optional(),
    prune: prune.optional(),
    timeouts: timeouts.optional(),
    maxReplyBytes: z.number().int().min(1024).optional(),
  })
  .strict();

export const jobSchema = z
  .object({
    guests: z.array(name).default([]),
    /** Guests frozen together: freeze all, snapshot all, thaw all. */
    groups: z.array(z.array(name).min(2, 'a consistency group has at least two guests')).default([]),
    concurrency: z.number().int().min(1).max(1024).optional(),
    budget: budget.optional(),
    failurePolicy: z.enum(['fail', 'crash-consistent']).optional(),
    notify: argv.optional(),
  })
  .strict();

export const configSchema = z
  .object({
    stateDir: absPath.optional(),
    metricsFile: absPath.optional(),
    /** How long a run waits for another run of the same job to finish (default: fail at once). */
    lockWait: durationIn(DURATION_RANGES.lockWait).optional(),
    defaults: z
      .object({
        budget: budget.optional(),
        concurrency: z.number().int().min(1).max(1024).optional(),
        failurePolicy: z.enum(['fail', 'crash-consistent']).optional(),
        timeouts: timeouts.optional(),
      })
      .strict()
      .optional(),
    guests: z.record(name, guestSchema),
    jobs: z.record(name, jobSchema).default({}),
  })
  .strict();

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ParsedGuest = z.output<typeof guestSchema>;
