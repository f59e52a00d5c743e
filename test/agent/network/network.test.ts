import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildInterfaces } from '../../../agent/src/network/interfaces.js';
import { formatIpv6, maskBits, parseIpv6 } from '../../../agent/src/network/ipv6.js';
import { parseProcNetDev } from '../../../agent/src/network/proc-net-dev.js';
import { hardwareAddress, readIfInet6, type Address, type Link } from '../../../agent/src/network/sources.js';

const root = mkdtempSync(join(tmpdir(), 'quiesce-net-'));
after(() => rmSync(root, { recursive: true, force: true }));

// inet_ntop(AF_INET6) outputs (glibc), the reference's formatting.
const ipv6: [string, string][] = [
  ['00000000000000000000000000000000', '::'],
  ['00000000000000000000000000000001', '::1'],
  ['fe8000000000000000fc00fffe000001', 'fe80::fc:ff:fe00:1'],
  ['20010db8000000000000000000000005', '2001:db8::5'],
  ['20010000000000010000000000000000', '2001:0:0:1::'],
  ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
  ['00000000000000000000ffff01020305', '::ffff:1.2.3.5'],
  ['00000000000000000000000001020304', '::1.2.3.4'],
  ['00000000000000000000000000000102', '::102'],
  ['20010db8000000010000000000000001', '2001:db8:0:1::1'],
  ['20010db8000100000001000000000001', '2001:db8:1:0:1::1'],
  ['20010db8000000000001000000010001', '2001:db8::1:0:1:1'],
  ['00010002000300040005000600070008', '1:2:3:4:5:6:7:8'],
  ['00010000000300040005000600070008', '1:0:3:4:5:6:7:8'],
];
for (const [hex, text] of ipv6) {
  test(`IPv6 ${hex} is written ${text}, and read back`, () => {
    assert.equal(formatIpv6(Buffer.from(hex, 'hex')), text);
    assert.equal(Buffer.from(parseIpv6(text)).toString('hex'), hex);
  });
}

test('prefixes are the bits set in the netmask, as the reference counts them', () => {
  assert.equal(maskBits('255.255.255.0'), 24);
  assert.equal(maskBits('255.0.0.0'), 8);
  assert.equal(maskBits('255.255.255.255'), 32);
  assert.equal(maskBits('0.0.0.0'), 0);
  assert.equal(maskBits('255.0.255.0'), 16);
  assert.equal(maskBits('ffff:ffff:ffff:ffff::'), 64);
  assert.equal(maskBits('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 128);
  assert.equal(maskBits('ffff:ffff:ffff::'), 48);
  assert.equal(maskBits('::'), 0);
});

test('hardware addresses: six bytes, lowercase, missing bytes zero, longer ones cut', () => {
  assert.equal(hardwareAddress('02:FC:00:00:00:01'), '02:fc:00:00:00:01');
  assert.equal(hardwareAddress(''), '00:00:00:00:00:00');
  assert.equal(hardwareAddress('0a:01:02:03'), '0a:01:02:03:00:00');
  assert.equal(hardwareAddress('80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:d1'), '80:00:00:48:fe:80');
});

test('/proc/net/dev: the eight counters of 7.2, found by exact name, %lld saturating', () => {
  const text = [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    '    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0',
    '  eth0: 252790576    8058    1    2    3     4          5         6   657616    4788    7    8    9    10      11         12',
    'eth1:18446744073709551615 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15',
    '  bad: 1 2 3',
    '',
  ].join('\n');
  const stats = parseProcNetDev(text);
  assert.deepEqual([...stats.keys()], ['lo', 'eth0', 'eth1']);
  assert.deepEqual(stats.get('eth0'), {
    'rx-bytes': 252790576n,
    'rx-packets': 8058n,
    'rx-errs': 1n,
    'rx-dropped': 2n,
    'tx-bytes': 657616n,
    'tx-packets': 4788n,
    'tx-errs': 7n,
    'tx-dropped': 8n,
  });
  assert.equal(stats.get('eth1')!['rx-bytes'], 9223372036854775807n);
});

test('/proc/net/if_inet6 gives the IPv6 addresses of the asked links', () => {
  const path = join(root, 'if_inet6');
  writeFileSync(
    path,
    [
      'fe80000000000000449d36fffe946e84 02 40 20 c0      br0',
      '20010db8000200000000000000000001 01 80 00 80       lo',
      '20010db8000000000000000000000005 03 30 00 82      br1',
    ].join('\n'),
  );
  assert.deepEqual(readIfInet6(new Set([2, 3]), path), [
    { name: 'br0', family: 'ipv6', address: 'fe80::449d:36ff:fe94:6e84', prefix: 64 },
    { name: 'br1', family: 'ipv6', address: '2001:db8::5', prefix: 48 },
  ]);
});

test('entries as the reference walks getifaddrs(): links by index, labels after them, IPv4 before IPv6', () => {
  const link = (name: string, index: number, hw?: string): Link => ({
    name,
    index,
    hardwareAddress: hw,
    upAndRunning: true,
  });
  const a = (name: string, address: string, prefix: number): Address => ({
    name,
    family: address.includes(':') ? 'ipv6' : 'ipv4',
    address,
    prefix,
  });
  const stats = parseProcNetDev('eth0: 1 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0\nlo: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n');
  const out = buildInterfaces(
    [link('eth0', 2, '02:00:00:00:00:01'), link('lo', 1, '00:00:00:00:00:00'), link('nohw', 3)].sort(
      (x, y) => x.index - y.index,
    ),
    // As sources give them: grouped by name, IPv6 of eth0 before a label of lo.
    [
      a('eth0', 'fe80::1', 64),
      a('eth0', '10.0.0.1', 24),
      a('eth0:9', '10.0.0.9', 8),
      a('lo:1', '127.0.0.2', 8),
      a('lo', '::1', 128),
    ],
    stats,
  );
  assert.deepEqual(JSON.parse(JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))), [
    {
      name: 'lo',
      'hardware-address': '00:00:00:00:00:00',
      'ip-addresses': [{ 'ip-address': '::1', 'ip-address-type': 'ipv6', prefix: 128 }],
      statistics: {
        'rx-bytes': 0,
        'rx-packets': 0,
        'rx-errs': 0,
        'rx-dropped': 0,
        'tx-bytes': 0,
        'tx-packets': 0,
        'tx-errs': 0,
        'tx-dropped': 0,
      },
    },
    {
      name: 'eth0',
      'hardware-address': '02:00:00:00:00:01',
      'ip-addresses': [
        { 'ip-address': '10.0.0.1', 'ip-address-type': 'ipv4', prefix: 24 },
        { 'ip-address': 'fe80::1', 'ip-address-type': 'ipv6', prefix: 64 },
      ],
      statistics: {
        'rx-bytes': 1,
        'rx-packets': 2,
        'rx-errs': 3,
        'rx-dropped': 4,
        'tx-bytes': 5,
        'tx-packets': 6,
        'tx-errs': 7,
        'tx-dropped': 8,
      },
    },
    // No address: neither ip-addresses nor statistics; no hardware address known: none given.
    { name: 'nohw' },
    // Labels: the base link's hardware address, no statistics (not in /proc/net/dev), by base link index.
    {
      name: 'lo:1',
      'hardware-address': '00:00:00:00:00:00',
      'ip-addresses': [{ 'ip-address': '127.0.0.2', 'ip-address-type': 'ipv4', prefix: 8 }],
    },
    {
      name: 'eth0:9',
      'hardware-address': '02:00:00:00:00:01',
      'ip-addresses': [{ 'ip-address': '10.0.0.9', 'ip-address-type': 'ipv4', prefix: 8 }],
    },
  ]);
});
