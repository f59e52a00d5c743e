import { describeConnector, type ConnectorSpec } from '../config/connector.js';
import { openSocket } from './connectors/socket.js';
import { openLocal } from './connectors/local.js';
import { LibvirtAgent } from './connectors/libvirt.js';
import type { ClientEvent } from '../log/events.js';
import { StreamAgentClient } from './stream-client.js';
import type { GuestAgent } from './types.js';

export interface ConnectOptions {
  readonly maxReplyBytes?: number;
  readonly onEvent?: (event: ClientEvent) => void;
}

/** A client for the guest, not yet connected (the first command connects and syncs). */
export function guestAgent(
  spec: ConnectorSpec,
  opts: ConnectOptions = {},
): GuestAgent & { connect?: () => Promise<void> } {
  const address = describeConnector(spec);
  const common = {
    address,
    ...(opts.maxReplyBytes !== undefined ? { maxReplyBytes: opts.maxReplyBytes } : {}),
    ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
  };
  switch (spec.kind) {
    case 'socket':
      return new StreamAgentClient({ ...common, open: () => openSocket(spec) });
    case 'local':
      return new StreamAgentClient({
        ...common,
        open: () =>
          openLocal(spec.agentArgs ?? [], { onStderr: (text) => opts.onEvent?.({ kind: 'agent-log', address, text }) }),
      });
    case 'libvirt':
      return new LibvirtAgent(spec, {
        ...(opts.maxReplyBytes !== undefined ? { maxReplyBytes: opts.maxReplyBytes } : {}),
        onWarning: (message) => opts.onEvent?.({ kind: 'warning', message, guest: address }),
      });
  }
}
