/** A byte stream to an agent (a unix socket wired to a guest, a TCP socket, a local agent's stdio). */
export interface ByteChannel {
  write(data: Buffer): Promise<void>;
  /** Called with each chunk read. */
  onData(listener: (data: Buffer) => void): void;
  /** Called once when the stream ends or fails. */
  onClose(listener: (err?: Error) => void): void;
  close(): Promise<void>;
}

/** Opens a fresh channel to the same agent (used again to reconnect). */
export type ChannelOpener = () => Promise<ByteChannel>;
