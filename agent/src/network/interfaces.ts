import type { InterfaceStats } from './proc-net-dev.js';
import type { Address, Link } from './sources.js';

/** GuestNetworkInterface as the reference fills it (members absent when it has nothing). */
export type GuestNetworkInterface = {
  name: string;
  // Set to undefined when the reference has nothing: the encoder leaves such members out.
  'hardware-address'?: string | undefined;
  'ip-addresses'?: { 'ip-address': string; 'ip-address-type': 'ipv4' | 'ipv6'; prefix: number }[];
  statistics?: InterfaceStats | undefined;
};

/** The link a name belongs to: itself, or the part before ':' for an address label. */
function baseName(name: string): string {
  const colon = name.indexOf(':');
  return colon < 0 ? name : name.slice(0, colon);
}

/**
 * Builds the reply the way the reference walks getifaddrs(): one entry per
 * link in link order, then one per address label that is not a link name
 * (in address-dump order: by link, IPv4 first); each entry's addresses in
 * dump order; hardware address from the (base) link; statistics only for
 * entries that have an address and whose name /proc/net/dev knows.
 */
export function buildInterfaces(
  links: readonly Link[],
  addresses: readonly Address[],
  stats: ReadonlyMap<string, InterfaceStats>,
): GuestNetworkInterface[] {
  const byName = new Map<string, GuestNetworkInterface>();
  const linkByName = new Map(links.map((l) => [l.name, l]));
  for (const link of links) {
    byName.set(link.name, { name: link.name, 'hardware-address': link.hardwareAddress });
  }
  const position = (a: Address): number => linkByName.get(baseName(a.name))?.index ?? Number.MAX_SAFE_INTEGER;
  // The address dump lists IPv4 for every link, then IPv6; labels only exist on IPv4 addresses.
  const ordered = [...addresses.filter((a) => a.family === 'ipv4'), ...addresses.filter((a) => a.family === 'ipv6')]
    .map((a, i) => ({ a, i }))
    .sort((x, y) => position(x.a) - position(y.a) || x.i - y.i)
    .map(({ a }) => a);
  const labels: GuestNetworkInterface[] = [];
  for (const a of ordered) {
    let entry = byName.get(a.name);
    if (!entry) {
      entry = { name: a.name, 'hardware-address': linkByName.get(baseName(a.name))?.hardwareAddress };
      byName.set(a.name, entry);
      labels.push(entry);
    }
    (entry['ip-addresses'] ??= []).push({ 'ip-address': a.address, 'ip-address-type': a.family, prefix: a.prefix });
  }
  const result = [...links.map((l) => byName.get(l.name)!), ...labels];
  for (const entry of result) {
    if (entry['ip-addresses']) entry.statistics = stats.get(entry.name);
  }
  return result;
}
