/** Where a socket connector reaches an agent: a unix socket (QEMU chardev) or TCP. */
export type SocketAddress = { readonly path: string } | { readonly host: string; readonly port: number };

/** A libvirt domain whose agent libvirt reaches for us. */
export interface LibvirtTarget {
  /** libvirt connection URI (`qemu:///system`, `qemu+ssh://host/system`); virsh's default when absent. */
  readonly uri?: string;
  readonly domain: string;
  /** The virsh binary (tests may point elsewhere). */
  readonly virsh?: string;
}

/** How to reach one guest's agent (resolved from the config's `connector`). */
export type ConnectorSpec =
  | ({ readonly kind: 'socket' } & SocketAddress)
  | { readonly kind: 'local'; readonly agentArgs?: readonly string[] }
  | ({ readonly kind: 'libvirt' } & LibvirtTarget);

export function describeSocket(addr: SocketAddress): string {
  return 'path' in addr ? `unix:${addr.path}` : `tcp:${addr.host}:${addr.port}`;
}

/** The address a connector reaches: the key of the guest's channel lock, and how reports name it. */
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
