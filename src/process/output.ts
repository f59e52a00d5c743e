/** Output kept per stream for the log, the report and error messages; the rest is read and dropped. */
export const MAX_OUTPUT_BYTES = 64 * 1024;
/** Lines per stream that go to the log. */
export const MAX_LOGGED_LINES = 50;
/** Bytes kept from the end of a stream, so an error quotes its real last line even past the cap. */
const TAIL_BYTES = 4096;

/** One stream's output: the first MAX_OUTPUT_BYTES, plus the last few KiB. */
export class BoundedOutput {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private tailBuf: Buffer = Buffer.alloc(0);
  /** Bytes read but not kept. */
  dropped = 0;

  push(chunk: Buffer): void {
    const room = MAX_OUTPUT_BYTES - this.kept;
    if (room > 0) {
      const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
      this.chunks.push(part);
      this.kept += part.length;
    }
    this.dropped += Math.max(0, chunk.length - Math.max(0, room));
    this.tailBuf =
      chunk.length >= TAIL_BYTES
        ? chunk.subarray(chunk.length - TAIL_BYTES)
        : Buffer.concat([this.tailBuf, chunk]).subarray(-TAIL_BYTES);
  }

  /** The kept output as text, without one final newline. */
  text(): string {
    return Buffer.concat(this.chunks, this.kept)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  }

  /** The last non-blank line of the stream (from its real end), at most 300 characters. */
  lastLine(): string | undefined {
    const lines = this.tailBuf.toString('utf8').split(/\r?\n/);
    for (let i = lines.length - 1; i >= 0; i--) {
      const line = lines[i]!.trim();
      if (line) return line.slice(0, 300);
    }
    return undefined;
  }
}

/** The first MAX_LOGGED_LINES lines of `text`. */
export function linesToLog(text: string): string[] {
  if (!text) return [];
  return text.split(/\r?\n/, MAX_LOGGED_LINES);
}
