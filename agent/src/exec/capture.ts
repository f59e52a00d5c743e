import type { Readable } from 'node:stream';

/** How much of each of a child's stdout and stderr is kept (the reference's GUEST_EXEC_MAX_OUTPUT, 16 MiB). */
export const EXEC_MAX_OUTPUT = 16 * 1024 * 1024;

/**
 * One output stream of a child, read as it comes (so the child never blocks
 * on a full pipe): the first `limit` bytes are kept, anything after them is
 * read and dropped and marks the capture truncated.
 */
export class OutputCapture {
  private chunks: Buffer[] = [];
  /** Bytes kept. */
  length = 0;
  truncated = false;
  /** The stream has ended (EOF or error) and is closed. */
  closed = false;

  constructor(
    private readonly stream: Readable,
    private readonly limit = EXEC_MAX_OUTPUT,
    onClosed: () => void = () => undefined,
  ) {
    stream.on('data', (chunk: Buffer) => this.add(chunk));
    // A read error ends the capture like EOF does in the reference; 'close' follows either.
    stream.on('error', () => undefined);
    stream.once('close', () => {
      this.closed = true;
      onClosed();
    });
  }

  private add(chunk: Buffer): void {
    const room = this.limit - this.length;
    if (chunk.length > room) this.truncated = true;
    if (room <= 0) return;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.chunks.push(kept);
    this.length += kept.length;
  }

  /** Everything kept, as one buffer (the capture keeps it too). */
  data(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  /** Stops reading: the child's next write to the pipe fails (EPIPE), as when the reference's end closes. */
  destroy(): void {
    this.stream.destroy();
  }
}
