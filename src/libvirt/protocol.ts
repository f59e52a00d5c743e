/**
 * Program and procedure numbers from libvirt's remote_protocol.x and
 * qemu_protocol.x, and the flag and enum values of libvirt's public headers
 * that the wrappers in remote.ts take. The numbers are wire ABI: libvirt
 * never renumbers them. Only the procedures this client speaks are listed.
 */

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_PROTOCOL_VERSION = 1;
export const QEMU_PROGRAM = 0x20008087;
export const QEMU_PROTOCOL_VERSION = 1;

/** remote_procedure: REMOTE_PROC_* */
export const RemoteProc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  CONNECT_GET_TYPE: 3,
  CONNECT_GET_VERSION: 4,
  DOMAIN_CREATE_XML: 10,
  DOMAIN_DESTROY: 12,
  DOMAIN_GET_XML_DESC: 14,
  DOMAIN_LOOKUP_BY_NAME: 23,
  CONNECT_GET_HOSTNAME: 59,
  CONNECT_SUPPORTS_FEATURE: 60,
  AUTH_LIST: 66,
  AUTH_POLKIT: 70,
  CONNECT_GET_LIB_VERSION: 157,
  DOMAIN_GET_JOB_INFO: 163,
  DOMAIN_ABORT_JOB: 164,
  DOMAIN_SNAPSHOT_CREATE_XML: 185,
  DOMAIN_SNAPSHOT_GET_XML_DESC: 186,
  DOMAIN_SNAPSHOT_DELETE: 193,
  DOMAIN_GET_BLOCK_INFO: 194,
  DOMAIN_GET_STATE: 212,
  DOMAIN_UNDEFINE_FLAGS: 231,
  DOMAIN_BLOCK_JOB_ABORT: 237,
  DOMAIN_GET_BLOCK_JOB_INFO: 238,
  DOMAIN_BLOCK_JOB_SET_SPEED: 239,
  DOMAIN_BLOCK_COMMIT: 290,
  DOMAIN_GET_JOB_STATS: 298,
  CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY: 316,
  CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY: 317,
  DOMAIN_EVENT_CALLBACK_LIFECYCLE: 318,
  DOMAIN_EVENT_CALLBACK_BLOCK_JOB: 326,
  DOMAIN_FSFREEZE: 335,
  DOMAIN_FSTHAW: 336,
  DOMAIN_EVENT_BLOCK_JOB_2: 339,
  DOMAIN_EVENT_CALLBACK_AGENT_LIFECYCLE: 348,
  DOMAIN_DEFINE_XML_FLAGS: 350,
  DOMAIN_EVENT_CALLBACK_JOB_COMPLETED: 363,
  DOMAIN_CHECKPOINT_CREATE_XML: 411,
  DOMAIN_CHECKPOINT_GET_XML_DESC: 412,
  DOMAIN_LIST_ALL_CHECKPOINTS: 413,
  DOMAIN_CHECKPOINT_LOOKUP_BY_NAME: 415,
  DOMAIN_CHECKPOINT_DELETE: 417,
  DOMAIN_BACKUP_BEGIN: 421,
  DOMAIN_BACKUP_GET_XML_DESC: 422,
  DOMAIN_ABORT_JOB_FLAGS: 442,
} as const;

/** qemu_procedure: QEMU_PROC_* */
export const QemuProc = {
  DOMAIN_MONITOR_COMMAND: 1,
  DOMAIN_AGENT_COMMAND: 3,
} as const;

/** The name libvirt's docs and virsh's debug output use for a procedure (`domain-lookup-by-name`). */
export function procedureName(program: number, procedure: number): string {
  const table: Record<string, number> = program === QEMU_PROGRAM ? QemuProc : RemoteProc;
  const key = Object.keys(table).find((k) => table[k] === procedure);
  const prefix = program === QEMU_PROGRAM ? 'qemu-' : '';
  return key ? prefix + key.toLowerCase().replace(/_/g, '-') : `${prefix}procedure-${procedure}`;
}

/** Limits of remote_protocol.x (REMOTE_*_MAX) the decoders enforce. */
export const Limits = {
  STRING: 4 * 1024 * 1024,
  DOMAIN_LIST: 16384,
  AUTH_TYPE_LIST: 20,
  CHECKPOINT_LIST: 16384,
  /** Job statistics, also those a job-completed event carries. */
  JOB_STATS: 64,
  FSFREEZE_MOUNTPOINTS: 256,
} as const;

/** remote_auth_type */
export const AuthType = { NONE: 0, SASL: 1, POLKIT: 2 } as const;

/** virDrvFeature values asked with connect-supports-feature (libvirt_internal.h). */
export const DrvFeature = {
  /** Asking it also tells libvirtd to start sending keepalive PINGs on this connection. */
  PROGRAM_KEEPALIVE: 10,
  /** Server-side event filtering by callback id (connect-domain-event-callback-register-any). */
  REMOTE_EVENT_CALLBACK: 14,
} as const;

/** virConnectFlags */
export const ConnectFlags = { RO: 1 } as const;

/** virDomainXMLFlags */
export const DomainXmlFlags = { SECURE: 1, INACTIVE: 2, UPDATE_CPU: 4, MIGRATABLE: 8 } as const;

/** virDomainUndefineFlagsValues */
export const UndefineFlags = {
  MANAGED_SAVE: 1,
  SNAPSHOTS_METADATA: 2,
  NVRAM: 4,
  KEEP_NVRAM: 8,
  CHECKPOINTS_METADATA: 16,
} as const;

/** virDomainSnapshotCreateFlags */
export const SnapshotCreateFlags = {
  REDEFINE: 1,
  CURRENT: 2,
  NO_METADATA: 4,
  HALT: 8,
  DISK_ONLY: 16,
  REUSE_EXT: 32,
  /** Freezes every guest filesystem through the agent: never on a test host's own guest without a freeze list. */
  QUIESCE: 64,
  ATOMIC: 128,
  LIVE: 256,
  VALIDATE: 512,
} as const;

/** virDomainSnapshotDeleteFlags */
export const SnapshotDeleteFlags = { CHILDREN: 1, METADATA_ONLY: 2, CHILDREN_ONLY: 4 } as const;

/** virDomainCheckpointCreateFlags */
export const CheckpointCreateFlags = { REDEFINE: 1, QUIESCE: 2, REDEFINE_VALIDATE: 4 } as const;

/** virDomainCheckpointXMLFlags: SIZE adds each disk's changed bytes (running domains only). */
export const CheckpointXmlFlags = { SECURE: 1, NO_DOMAIN: 2, SIZE: 4 } as const;

/** virDomainCheckpointDeleteFlags */
export const CheckpointDeleteFlags = { CHILDREN: 1, METADATA_ONLY: 2, CHILDREN_ONLY: 4 } as const;

/** virDomainBackupBeginFlags */
export const BackupBeginFlags = { REUSE_EXTERNAL: 1 } as const;

/** virDomainGetJobStatsFlags */
export const JobStatsFlags = { COMPLETED: 1, KEEP_COMPLETED: 2 } as const;

/** virDomainJobType */
export const JobType = { NONE: 0, BOUNDED: 1, UNBOUNDED: 2, COMPLETED: 3, FAILED: 4, CANCELLED: 5 } as const;

/** virDomainBlockCommitFlags */
export const BlockCommitFlags = { SHALLOW: 1, DELETE: 2, ACTIVE: 4, RELATIVE: 8, BANDWIDTH_BYTES: 16 } as const;

/** virDomainBlockJobAbortFlags */
export const BlockJobAbortFlags = { ASYNC: 1, PIVOT: 2 } as const;

/** virDomainBlockJobType */
export const BlockJobType = { UNKNOWN: 0, PULL: 1, COPY: 2, COMMIT: 3, ACTIVE_COMMIT: 4, BACKUP: 5 } as const;

/** virConnectDomainEventBlockJobStatus */
export const BlockJobStatus = { COMPLETED: 0, FAILED: 1, CANCELED: 2, READY: 3 } as const;

/** virDomainEventID (the events this client decodes). */
export const DomainEventId = {
  LIFECYCLE: 0,
  BLOCK_JOB: 8,
  BLOCK_JOB_2: 16,
  AGENT_LIFECYCLE: 18,
  JOB_COMPLETED: 21,
} as const;

/** virDomainEventType (lifecycle events). */
export const LifecycleEvent = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;

/** virDomainState */
export const DomainState = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;

/** virDomainQemuAgentCommandTimeoutValues: seconds, or one of these. */
export const AgentTimeout = { BLOCK: -2, DEFAULT: -1, NOWAIT: 0 } as const;

/** virTypedParameterType */
export const TypedParamType = { INT: 1, UINT: 2, LLONG: 3, ULLONG: 4, DOUBLE: 5, BOOLEAN: 6, STRING: 7 } as const;
