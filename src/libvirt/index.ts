// libvirt's RPC protocol spoken directly over libvirtd's unix socket: one connection for many calls.
// Layers, bottom up: xdr (encoding) → packet (framing) → client (serials, timeouts, keepalive, events)
// → remote (typed procedures); protocol, types, events and error hold the shared definitions.
export { DEFAULT_SOCKET, RpcClient, type CallOptions, type RpcClientOptions, type RpcMessage } from './client.js';
export { LibvirtError, VirErr, VirFrom, type RemoteError } from './error.js';
export { decodeDomainEvent, type DomainEvent } from './events.js';
export { DEFAULT_MAX_PACKET_BYTES } from './packet.js';
export * from './protocol.js';
export {
  LibvirtConnection,
  type AgentCommandOptions,
  type BlockJobInfo,
  type EventWaitOptions,
  type JobInfo,
  type JobStats,
  type LibvirtOpenOptions,
} from './remote.js';
export {
  uuidString,
  type CheckpointRef,
  type DomainRef,
  type SnapshotRef,
  type TypedParam,
  type TypedValue,
} from './types.js';
export { type RpcTransport } from './client.js';
export { LibvirtLease, LibvirtPool, libvirtPool, LINGER_MS, NativeUnavailable, type PoolOptions } from './pool.js';
export {
  defaultUri,
  existingSocket,
  openSsh,
  remoteCommand,
  routeFor,
  sshArgv,
  type LibvirtRoute,
  type SshTransport,
} from './transport.js';
