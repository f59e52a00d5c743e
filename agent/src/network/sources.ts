import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { formatIpv6, maskBits, parseIpv6 } from './ipv6.js';

/** A network device, in the order the kernel lists links (by interface index). */
export interface Link {
  readonly name: string;
  readonly index: number;
  /** What SIOCGIFHWADDR gives: the first six bytes of the device address, zero-padded. */
  readonly hardwareAddress: string | undefined;
  /** IFF_UP and IFF_RUNNING: only such links' addresses are in os.networkInterfaces(). */
  readonly upAndRunning: boolean;
}

/** One address as getifaddrs() lists it: `name` is the address label for IPv4 aliases ("eth0:1"). */
export interface Address {
  readonly name: string;
  readonly family: 'ipv4' | 'ipv6';
  readonly address: string;
  readonly prefix: number;
}

const IFF_UP = 0x1;

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The device address formatted as the reference does: six bytes, lowercase hex, missing bytes zero. */
export function hardwareAddress(sysfsAddress: string): string {
  const bytes = sysfsAddress === '' ? [] : sysfsAddress.split(':').map((h) => parseInt(h, 16));
  return Array.from({ length: 6 }, (_, i) => (bytes[i] ?? 0).toString(16).padStart(2, '0')).join(':');
}

/** Every link of the network namespace from /sys/class/net, by interface index. */
export function readLinks(root = '/sys/class/net'): Link[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const links: Link[] = [];
  for (const name of names) {
    const index = Number(readTrimmed(`${root}/${name}/ifindex`));
    // Entries that are not devices (bonding_masters) have no ifindex.
    if (!Number.isInteger(index)) continue;
    const address = readTrimmed(`${root}/${name}/address`);
    const flags = Number(readTrimmed(`${root}/${name}/flags`) ?? 0);
    const operstate = readTrimmed(`${root}/${name}/operstate`);
    links.push({
      name,
      index,
      hardwareAddress: address === undefined ? undefined : hardwareAddress(address),
      // IFF_RUNNING is netif_oper_up(): operstate up, or unknown for drivers that do not report it.
      upAndRunning: (flags & IFF_UP) !== 0 && (operstate === 'up' || operstate === 'unknown'),
    });
  }
  return links.sort((a, b) => a.index - b.index);
}

/**
 * Addresses of links that are up and running, from libuv's getifaddrs() walk
 * (the reference's own source, so order and labels are the same).
 */
export function readLibuvAddresses(): Address[] {
  const out: Address[] = [];
  for (const [name, list] of Object.entries(networkInterfaces())) {
    for (const a of list ?? []) {
      const v6 = a.family === 'IPv6';
      out.push({
        name,
        family: v6 ? 'ipv6' : 'ipv4',
        // libuv formats like inet_ntop; normalise anyway so both sources agree byte for byte.
        address: v6 ? formatIpv6(parseIpv6(a.address)) : a.address,
        prefix: maskBits(a.netmask),
      });
    }
  }
  return out;
}

interface IpJsonLink {
  ifindex?: number;
  ifname?: string;
  addr_info?: { family?: string; local?: string; prefixlen?: number; label?: string }[];
}

/**
 * Addresses of the given links (by index) from iproute2's rtnetlink dump,
 * which has what libuv leaves out: the addresses of links that are down or
 * have no carrier. Undefined when `ip` cannot be run.
 */
export function readIpAddresses(indexes: ReadonlySet<number>): Address[] | undefined {
  const r = spawnSync('ip', ['-j', 'address', 'show'], {
    encoding: 'utf8',
    timeout: 5000,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  if (r.status !== 0 || typeof r.stdout !== 'string') return undefined;
  let parsed: IpJsonLink[];
  try {
    parsed = JSON.parse(r.stdout) as IpJsonLink[];
  } catch {
    return undefined;
  }
  const out: Address[] = [];
  for (const link of parsed) {
    if (link.ifindex === undefined || !indexes.has(link.ifindex) || !link.ifname) continue;
    for (const a of link.addr_info ?? []) {
      if (!a.local || a.prefixlen === undefined) continue;
      if (a.family === 'inet') {
        out.push({ name: a.label ?? link.ifname, family: 'ipv4', address: a.local, prefix: a.prefixlen });
      } else if (a.family === 'inet6') {
        out.push({ name: link.ifname, family: 'ipv6', address: formatIpv6(parseIpv6(a.local)), prefix: a.prefixlen });
      }
    }
  }
  return out;
}

/** IPv6 addresses of the given links from /proc/net/if_inet6 (no IPv4 source without netlink). */
export function readIfInet6(indexes: ReadonlySet<number>, path = '/proc/net/if_inet6'): Address[] {
  const text = readTrimmed(path) ?? '';
  const out: Address[] = [];
  for (const line of text.split('\n')) {
    const [hex, index, prefix, , , name] = line.trim().split(/\s+/);
    if (!hex || hex.length !== 32 || !name || !indexes.has(parseInt(index ?? '', 16))) continue;
    out.push({
      name,
      family: 'ipv6',
      address: formatIpv6(Buffer.from(hex, 'hex')),
      prefix: parseInt(prefix ?? '0', 16),
    });
  }
  return out;
}
