import { connect, type Socket } from 'node:net';

/** The reply both agents give to a lone 0xFF byte. */
export const STRAY_FF = `{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"}}`;

/**
 * A raw connection to an agent: send bytes, read reply lines. `exchange`
 * sends bytes then 0xFF + guest-sync-delimited and returns every reply line
 * that came before the sentinel reply.
 */
export class Wire {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private closed = false;
  private syncId = 1000;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static open(path: string): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(new Wire(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(bytes: Buffer | string): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** Waits until the buffered output contains `needle` (or times out) and returns everything up to and including it. */
  async readUntil(needle: Buffer, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const at = this.buf.indexOf(needle);
      if (at >= 0) {
        const out = this.buf.subarray(0, at + needle.length);
        this.buf = this.buf.subarray(at + needle.length);
        return out;
      }
      if (this.closed) throw new Error(`connection closed; got ${JSON.stringify(this.buf.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `timeout waiting for ${needle.toString('latin1')}; got ${JSON.stringify(this.buf.toString('latin1'))}`,
        );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /**
   * Sends `bytes`, then 0xFF + guest-sync-delimited; returns every reply line
   * before the sync's reply (raw text, newline stripped). The last line is the
   * error both agents answer the 0xFF with.
   */
  async exchange(bytes: Buffer | string, timeoutMs = 5000): Promise<string[]> {
    const id = this.syncId++;
    this.send(bytes);
    this.send(
      Buffer.concat([Buffer.of(0xff), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}`)]),
    );
    const out = await this.readUntil(Buffer.from(`\xff{"return": ${id}}\n`, 'latin1'), timeoutMs);
    const text = out.subarray(0, out.length - `\xff{"return": ${id}}\n`.length).toString('latin1');
    return text.split('\n').filter((l) => l !== '');
  }

  /** Sends one request and returns its single reply, parsed. */
  async call(execute: string, args?: unknown): Promise<unknown> {
    const req = JSON.stringify(args === undefined ? { execute } : { execute, arguments: args });
    const lines = await this.exchange(req);
    if (lines.length !== 2 || lines[1] !== STRAY_FF)
      throw new Error(`expected one reply to ${req}, got ${JSON.stringify(lines)}`);
    return JSON.parse(lines[0]!) as unknown;
  }

  close(): void {
    this.socket.destroy();
  }
}
