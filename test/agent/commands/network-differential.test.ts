/**
 * guest-network-get-interfaces against qemu-ga: on this machine, and in a
 * network namespace built to have every case the reference's getifaddrs()
 * walk distinguishes (address labels, links that are down or without carrier,
 * links without a hardware address, IPv4-mapped IPv6, several prefixes).
 * Replies must be byte-identical apart from traffic counters, which move.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { isRoot, startAgent, type AgentKind, type StartOptions } from '../../helpers/agents.js';
import { LineClient, SKIP_NO_QEMU_GA } from './file-rig.js';

const REQUEST = { execute: 'guest-network-get-interfaces' };

/** The reply with every statistics counter replaced by 0 (the members and their order stay). */
function withoutCounters(reply: string): string {
  return reply.replace(/"statistics": \{[^}]*\}/g, (s) => s.replace(/: \d+/g, ': 0'));
}

async function ask(kind: AgentKind, opts: StartOptions = {}): Promise<string> {
  const agent = await startAgent(kind, opts);
  const client = await LineClient.open(agent.socket);
  try {
    return await client.request(REQUEST);
  } finally {
    client.close();
    await agent.stop();
  }
}

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`]);
  return r.status === 0 ? r.stdout.toString().trim() : undefined;
}

describe('guest-network-get-interfaces against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  test('on this machine: the same interfaces, addresses, hardware addresses and order', async () => {
    const [ours, ref] = [await ask('quiesce'), await ask('qemu-ga')];
    assert.match(ours, /^\{"return": \[\{"name": "lo", /);
    assert.equal(withoutCounters(ours), withoutCounters(ref));
  });

  const NAMESPACE_SETUP = `
set -e
mount -t sysfs sysfs /sys
ip link set lo up
ip addr add 127.0.0.9/30 dev lo
ip addr add 127.0.0.2/8 dev lo label lo:1
ip addr add 127.0.0.3/8 dev lo label lo:zz
ip -6 addr add 2001:db8:1::1/64 dev lo
ip -6 addr add 2001:db8:2::1/128 dev lo
ip -6 addr add ::1.2.3.4/128 dev lo
ip -6 addr add ::ffff:1.2.3.5/128 dev lo
ip -6 addr add 2001:0:0:1::/64 dev lo
ip link add br0 type bridge
ip link set br0 up
ip addr add 10.1.2.3/24 dev br0
ip addr add 10.1.2.4/16 dev br0 label br0:1
ip -6 addr add 2001:db8::5/48 dev br0 nodad
ip link add br1 type bridge
ip addr add 10.9.9.9/8 dev br1
ip addr add 10.9.9.10/8 dev br1 label br1:lab
ip tuntap add tn0 mode tun
ip addr add 10.7.7.7/32 dev tn0
ip -6 addr add 2001:db8:0:0:1:0:0:1/64 dev tn0 nodad
ip link set tn0 up
ip link add br2 type bridge
ip link set br2 up
ip addr add 10.3.3.3/24 dev br2 label br2:x
ip link add br3 type bridge
echo ready
exec sleep 100000
`;
  const nsSkip = !isRoot()
    ? 'needs root to create a network namespace'
    : !which('unshare') || !which('nsenter') || !which('ip')
      ? 'needs unshare, nsenter and ip (util-linux, iproute2)'
      : false;

  describe('in a network namespace with labels, down links, tun and IPv6 forms', { skip: nsSkip }, () => {
    let holder: ChildProcess | undefined;
    let wrap: string[] = [];
    let setupError = '';

    before(async () => {
      holder = spawn('unshare', ['--net', '--mount', '--propagation', 'private', 'sh', '-c', NAMESPACE_SETUP], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      holder.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      holder.stderr!.on('data', (d: Buffer) => (setupError += d.toString()));
      const exited = once(holder, 'exit');
      for (let i = 0; i < 100 && !out.includes('ready'); i++) {
        await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
        if (holder.exitCode !== null) break;
      }
      if (!out.includes('ready')) setupError ||= 'namespace set-up did not finish';
      wrap = [which('nsenter')!, '-t', String(holder.pid), '--net', '--mount', '--'];
    });
    after(async () => {
      if (holder && holder.exitCode === null && holder.signalCode === null) {
        holder.kill('SIGKILL');
        await once(holder, 'exit');
      }
    });

    test('byte-identical replies apart from counters', async (t) => {
      // Kernels without bridge or tun support cannot build this namespace.
      if (setupError) return t.skip(`namespace set-up failed: ${setupError.trim()}`);
      const [ours, ref] = [await ask('quiesce', { wrap }), await ask('qemu-ga', { wrap })];
      const names = (JSON.parse(ours) as { return: { name: string }[] }).return.map((i) => i.name);
      assert.deepEqual(names, ['lo', 'br0', 'br1', 'tn0', 'br2', 'br3', 'lo:1', 'lo:zz', 'br0:1', 'br1:lab', 'br2:x']);
      assert.equal(withoutCounters(ours), withoutCounters(ref));
    });

    test('without iproute2, links that are down or without carrier lose their IPv4 addresses only', async (t) => {
      if (setupError) return t.skip(`namespace set-up failed: ${setupError.trim()}`);
      const ours = await ask('quiesce', { wrap, env: { PATH: '/nonexistent' } });
      const ref = JSON.parse(await ask('qemu-ga', { wrap })) as {
        return: { name: string; 'ip-addresses'?: { 'ip-address-type': string }[]; statistics?: unknown }[];
      };
      // Expected: the reference's answer without what only rtnetlink knows (br1 is down, tn0 has no carrier).
      const hidden = new Set(['br1', 'tn0']);
      const expected = ref.return
        .filter((i) => !(i.name.includes(':') && hidden.has(i.name.split(':')[0]!)))
        .map((i) => {
          if (!hidden.has(i.name)) return i;
          const left = i['ip-addresses']!.filter((a) => a['ip-address-type'] === 'ipv6');
          if (left.length > 0) return { ...i, 'ip-addresses': left };
          // Without addresses the reference leaves out both members.
          const rest = { ...i };
          delete rest['ip-addresses'];
          delete rest.statistics;
          return rest;
        });
      const got = JSON.parse(ours) as { return: typeof expected };
      const zero = (list: typeof expected): unknown[] =>
        list.map((i) =>
          'statistics' in i && i.statistics
            ? { ...i, statistics: Object.fromEntries(Object.keys(i.statistics).map((k) => [k, 0])) }
            : i,
        );
      assert.deepEqual(zero(got.return), zero(expected));
      assert.ok(!ours.includes('10.9.9.9') && ours.includes('2001:db8::1:0:0:1'));
    });
  });
});
