import type { AgentContext } from '../context.js';
import { errorText } from '../errno.js';
import { buildInterfaces } from '../network/interfaces.js';
import { readProcNetDev } from '../network/proc-net-dev.js';
import { readIfInet6, readIpAddresses, readLibuvAddresses, readLinks, type Address } from '../network/sources.js';
import { QgaError } from '../qapi/errors.js';
import type { CommandFamily } from '../qapi/types.js';

/**
 * guest-network-get-interfaces. Links come from /sys/class/net, addresses of
 * running links from libuv's getifaddrs() walk, and those of links that are
 * down or without carrier (which libuv skips) from `ip -j address show`, or
 * /proc/net/if_inet6 (IPv6 only) when iproute2 is missing.
 */
export async function networkCommands(ctx: AgentContext): Promise<CommandFamily> {
  return {
    commands: [
      {
        name: 'guest-network-get-interfaces',
        run: () => {
          const links = readLinks();
          let addresses: Address[];
          try {
            addresses = readLibuvAddresses();
          } catch (err) {
            throw new QgaError(`getifaddrs failed: ${errorText(err)}`);
          }
          const hidden = new Set(links.filter((l) => !l.upAndRunning).map((l) => l.index));
          if (hidden.size > 0) {
            let extra = readIpAddresses(hidden);
            if (!extra) {
              ctx.log({
                kind: 'debug',
                message: 'ip -j address show failed: IPv4 addresses of links that are down are not listed',
              });
              extra = readIfInet6(hidden);
            }
            addresses = [...addresses, ...extra];
          }
          return buildInterfaces(links, addresses, readProcNetDev());
        },
      },
    ],
  };
}
