/** How the agent reaches its host: started once, closed when the agent stops. */
export interface Transport {
  /** Resolves once the transport is ready for a host (listening, device opened). */
  start(): Promise<void>;
  close(): Promise<void>;
}
