import { describeSocket, openSocket, type SocketAddress } from './connectors/socket.js';
import { openLocal } from './connectors/local.js';
import { LibvirtAgent, type LibvirtTarget } from './connectors/libvirt.js';
import { StreamAgentClient, type ClientEvent } from './stream-client.js';
import type { GuestAgent } from './types.js';

/** How to reach one guest's agent. */
export type ConnectorSpec =
  | ({ readonly kind: 'socket' } & SocketAddress)
  | { readonly kind: 'local'; readonly agentArgs?: readonly string[] }
  | ({ readonly kind: 'libvirt' } & LibvirtTarget);

export interface ConnectOptions {
  readonly maxReplyBytes?: number;
  readonly onEvent?: (event: ClientEvent) => void;
}

/** The address a connector reaches, also the key of the guest's channel lock. */
export function describeConnector(spec: ConnectorSpec): string {
  switch (spec.kind) {
    case 'socket':
      return describeSocket(spec);
    case 'local':
      return 'local';
    case 'libvirt':
      return `libvirt:${spec.uri ?? 'default'}/${spec.domain}`;
  }
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
      return new LibvirtAgent(spec);
  }
}
