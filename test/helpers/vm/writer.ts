import { spawnSync } from 'node:child_process';

/**
 * The guest's data writer (init.sh, `quiesce.writer=1`) and how to check a
 * copy of its disk on the host: file N holds 65536 bytes of "quiesce-writer N"
 * lines, lives in /w/<N mod 64> once complete (written with dd conv=fsync,
 * then renamed), and N is appended to /w/log after the rename and printed on
 * the console as "QUIESCE-VM: writer N". It can be paused between two files
 * (WRITER_PAUSE_FILE; pauseWriter/resumeWriter in guest-ops.ts).
 */
export const WRITER_ARG = 'quiesce.writer=1';
export const WRITER_SLOTS = 64;
export const WRITER_FILE_BYTES = 65536;
const WRITER_LINE = /QUIESCE-VM: writer (\d+)$/gm;
/** While this file exists in the guest, the writer writes nothing (see pauseWriter in guest-ops.ts). */
export const WRITER_PAUSE_FILE = '/run/quiesce-vm/writer-pause';
/** Printed once when the writer sees the pause file; N is the last file it wrote (0: none). */
export const WRITER_PAUSED = /QUIESCE-VM: writer paused (\d+)/;
/** Printed when the pause file is gone and the writer goes on. */
export const WRITER_RESUMED = /QUIESCE-VM: writer resumed/;
/** Printed by init when it starts the writer. */
export const WRITER_STARTED = /QUIESCE-VM: writer started pid=\d+/;

/** What file N must contain. */
export function writerContent(n: number): Buffer {
  const line = Buffer.from(`quiesce-writer ${n}\n`);
  const out = Buffer.alloc(WRITER_FILE_BYTES);
  for (let at = 0; at < out.length; at += line.length) line.copy(out, at);
  return out;
}

/** File numbers the writer announced on a piece of console output. */
export function writerNumbers(console: string): number[] {
  return [...console.matchAll(WRITER_LINE)].map((m) => Number(m[1]));
}

/** The last file number announced (0: none yet). */
export function lastWriterNumber(console: string): number {
  return writerNumbers(console).reduce((a, b) => Math.max(a, b), 0);
}

export interface Dumpe2fs {
  readonly state: string;
  readonly features: readonly string[];
  readonly needsRecovery: boolean;
  /** state clean and no journal to replay: usable as it is. */
  readonly clean: boolean;
  readonly raw: string;
}

/** `dumpe2fs -h` on an image file. */
export function dumpe2fs(image: string): Dumpe2fs {
  const r = spawnSync('dumpe2fs', ['-h', image], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`dumpe2fs -h ${image} failed: ${r.stderr}`);
  const state = /^Filesystem state:\s*(.+)$/m.exec(r.stdout)?.[1]?.trim() ?? '?';
  const features = (/^Filesystem features:\s*(.+)$/m.exec(r.stdout)?.[1] ?? '').trim().split(/\s+/);
  const needsRecovery = features.includes('needs_recovery');
  return { state, features, needsRecovery, clean: state === 'clean' && !needsRecovery, raw: r.stdout };
}

/** A file of an unmounted ext4 image, read with debugfs (no mount; a journal is not replayed). */
export function debugfsCat(image: string, path: string): Buffer | undefined {
  const r = spawnSync('debugfs', ['-R', `cat ${path}`, image], { maxBuffer: 64 << 20 });
  if (r.status !== 0) return undefined;
  // debugfs prints a banner on stderr and nothing on stdout for a missing file (plus an error on stderr).
  if (/File not found|not found by ext2_lookup/.test(r.stderr.toString())) return undefined;
  return r.stdout;
}

export interface WriterCheck {
  /** Numbers in the copy's /w/log. */
  readonly logged: number;
  readonly maxLogged: number;
  /** Slots whose file matches the last number logged for it (or the one unlogged successor). */
  readonly intact: number;
  readonly problems: readonly string[];
}

/**
 * Checks a copy of the data disk against the writer's log inside it: every
 * slot holds the content of the last number logged for it — or of the next
 * file, if the freeze came between that file's rename and its log line.
 */
export function checkWriterFiles(image: string): WriterCheck {
  const log = debugfsCat(image, '/w/log');
  if (!log) return { logged: 0, maxLogged: 0, intact: 0, problems: ['no /w/log in the copy'] };
  const numbers = log
    .toString('latin1')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (/^\d+$/.test(l) ? Number(l) : NaN));
  const problems: string[] = [];
  const firstBad = numbers.findIndex((n, i) => n !== i + 1);
  if (firstBad >= 0) {
    const nuls = log.filter((b) => b === 0).length;
    problems.push(
      `/w/log holds 1..${firstBad} then ${nuls ? `${nuls} NUL bytes (its size was written, its data not)` : `${JSON.stringify(log.toString('latin1').slice(-40))}`}`,
    );
  }
  const maxLogged = numbers.length ? Math.max(...numbers.filter(Number.isInteger)) : 0;
  const last = new Map<number, number>();
  for (const n of numbers) if (Number.isInteger(n)) last.set(n % WRITER_SLOTS, n);
  let intact = 0;
  for (const [slot, n] of last) {
    const content = debugfsCat(image, `/w/${slot}`);
    const next = maxLogged + 1;
    if (content?.equals(writerContent(n))) intact++;
    else if (next % WRITER_SLOTS === slot && content?.equals(writerContent(next))) intact++;
    else
      problems.push(
        `/w/${slot}: expected file ${n}, found ${content ? `${content.length} bytes starting ${JSON.stringify(content.subarray(0, 24).toString('latin1'))}` : 'nothing'}`,
      );
  }
  return { logged: numbers.length, maxLogged, intact, problems };
}
