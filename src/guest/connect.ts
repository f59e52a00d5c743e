import { describeConnector, type ConnectorSpec } from '../config/connector.js';
import type { ClientEvent } from '../log/events.js';
import type { GuestAgent } from './types.js';

export interface ConnectOptions {
  readonly maxReplyBytes?: number;
  readonly onEvent?: (event: ClientEvent) => void;
}

/** Each kind's modules, imported on first use: a run loads only the kinds its guests use. */
const modules = {
  socket: () => Promise.all([import('./connectors/socket.js'), import('./stream-client.js')]),
  local: () => Promise.all([import('./connectors/local.js'), import('./stream-client.js')]),
  libvirt: () => import('./connectors/libvirt.js'),
} as const;

/** Loads one kind of connector's modules (workflow/plan.ts's loadGuestKinds, before any window opens). */
export function loadConnector(kind: ConnectorSpec['kind']): Promise<unknown> {
  return modules[kind]();
}

/** A client for the guest, not yet connected (the first command connects and syncs). */
export async function guestAgent(
  spec: ConnectorSpec,
  opts: ConnectOptions = {},
): Promise<GuestAgent & { connect?: () => Promise<void> }> {
  const address = describeConnector(spec);
  const common = {
    address,
    ...(opts.maxReplyBytes !== undefined ? { maxReplyBytes: opts.maxReplyBytes } : {}),
    ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
  };
  switch (spec.kind) {
    case 'socket': {
      const [{ openSocket }, { StreamAgentClient }] = await modules.socket();
      return new StreamAgentClient({ ...common, open: () => openSocket(spec) });
    }
    case 'local': {
      const [{ openLocal }, { StreamAgentClient }] = await modules.local();
      return new StreamAgentClient({
        ...common,
        open: () =>
          openLocal(spec.agentArgs ?? [], { onStderr: (text) => opts.onEvent?.({ kind: 'agent-log', address, text }) }),
      });
    }
    case 'libvirt': {
      const { LibvirtAgent } = await modules.libvirt();
      return new LibvirtAgent(spec, {
        ...(opts.maxReplyBytes !== undefined ? { maxReplyBytes: opts.maxReplyBytes } : {}),
        onWarning: (message) => opts.onEvent?.({ kind: 'warning', message, guest: address }),
      });
    }
  }
}

/**
 * Starts, in the background, what of the guests' connect steps can start before the run's own set-up:
 * the libvirt connection of each URI and its domain lookups (libvirt/pool.ts's warm). The other kinds
 * have nothing to start: their connect is a local socket or process. Call it after loadConnector.
 */
export async function connectAhead(specs: readonly ConnectorSpec[]): Promise<void> {
  const byUri = new Map<string | undefined, string[]>();
  for (const s of specs) if (s.kind === 'libvirt') byUri.set(s.uri, [...(byUri.get(s.uri) ?? []), s.domain]);
  if (byUri.size === 0) return;
  const { libvirtPool } = await import('../libvirt/pool.js');
  for (const [uri, domains] of byUri) libvirtPool.warm(uri, domains);
}
