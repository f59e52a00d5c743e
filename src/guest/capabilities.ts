/** What an agent can do, from its guest-info reply. */
export interface Capabilities {
  readonly version: string;
  /** Registered commands and whether each is enabled now. */
  readonly commands: ReadonlyMap<string, { enabled: boolean; successResponse: boolean }>;
}

/** Downstream-extension commands of quiesce-agent's freeze watchdog. */
export const WATCHDOG_SET_LIMIT = '__io.github.quiesce_set-freeze-limit';
export const WATCHDOG_GET_RECORD = '__io.github.quiesce_get-freeze-record';

export function parseCapabilities(info: unknown): Capabilities {
  const i = info as { version?: unknown; supported_commands?: unknown };
  if (typeof i?.version !== 'string' || !Array.isArray(i.supported_commands)) {
    throw new TypeError('guest-info reply lacks version or supported_commands');
  }
  const commands = new Map<string, { enabled: boolean; successResponse: boolean }>();
  for (const c of i.supported_commands as { name?: unknown; enabled?: unknown; 'success-response'?: unknown }[]) {
    if (typeof c?.name !== 'string') continue;
    commands.set(c.name, { enabled: c.enabled === true, successResponse: c['success-response'] !== false });
  }
  return { version: i.version, commands };
}

export function isEnabled(caps: Capabilities, command: string): boolean {
  return caps.commands.get(command)?.enabled === true;
}

/** True when the agent advertises the freeze watchdog extension (quiesce-agent). */
export function hasWatchdog(caps: Capabilities): boolean {
  return isEnabled(caps, WATCHDOG_SET_LIMIT) && caps.commands.has(WATCHDOG_GET_RECORD);
}
