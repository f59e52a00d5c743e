import { describeConnector, type ConnectorSpec } from '../config/connector.js';
import type { ClientEvent } from '../log/events.js';
import type { GuestAgent } from './types.js';

export interface ConnectOptions {
  readonly maxReplyBytes?: number;
  readonly onEvent?: (event: ClientEvent) => void;
}

/**
 * Loads one kind of connector's modules (a run loads only the kinds its guests
 * use; src/workflow/kinds.ts loads them before any window opens).
 */
export function loadConnector(kind: ConnectorSpec['kind']): Promise<unknown> {
  switch (kind) {
    case 'socket':
      return Promise.all([import('./connectors/socket.js'), import('./stream-client.js')]);
    case 'local':
      return Promise.all([import('./connectors/local.js'), import('./stream-client.js')]);
    case 'libvirt':
      return import('./connectors/libvirt.js');
  }
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
      const [{ openSocket }, { StreamAgentClient }] = await Promise.all([
        import('./connectors/socket.js'),
        import('./stream-client.js'),
      ]);
      return new StreamAgentClient({ ...common, open: () => openSocket(spec) });
    }
    case 'local': {
      const [{ openLocal }, { StreamAgentClient }] = await Promise.all([
        import('./connectors/local.js'),
        import('./stream-client.js'),
      ]);
      return new StreamAgentClient({
        ...common,
        open: () =>
          openLocal(spec.agentArgs ?? [], { onStderr: (text) => opts.onEvent?.({ kind: 'agent-log', address, text }) }),
      });
    }
    case 'libvirt': {
      const { LibvirtAgent } = await import('./connectors/libvirt.js');
      return new LibvirtAgent(spec, {
        ...(opts.maxReplyBytes !== undefined ? { maxReplyBytes: opts.maxReplyBytes } : {}),
        onWarning: (message) => opts.onEvent?.({ kind: 'warning', message, guest: address }),
      });
    }
  }
}
