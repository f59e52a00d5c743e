// How a libvirt URI is reached: the local socket (libvirtd's, else virtqemud's), qemu+ssh as libvirt's own
// client does it (ssh … sh -c 'virt-ssh-helper URI, else nc -U SOCKET'), and virsh for the rest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { remoteCommand, routeFor, sshArgv } from '../../../src/libvirt/transport.js';

test('qemu:///system: the local sockets, connect-open with the URI itself', () => {
  const r = routeFor('qemu:///system');
  assert.deepEqual(r, {
    kind: 'unix',
    uri: 'qemu:///system',
    name: 'qemu:///system',
    sockets: ['/var/run/libvirt/libvirt-sock', '/var/run/libvirt/virtqemud-sock'],
  });
  assert.deepEqual(routeFor('qemu+unix:///system?socket=/tmp/s'), {
    kind: 'unix',
    uri: 'qemu+unix:///system?socket=/tmp/s',
    name: 'qemu:///system',
    sockets: ['/tmp/s'],
  });
});

test('no URI: $LIBVIRT_DEFAULT_URI, else qemu:///system for root', () => {
  assert.equal(routeFor(undefined, { LIBVIRT_DEFAULT_URI: 'qemu+ssh://h/system' }).kind, 'ssh');
  if (process.getuid?.() === 0) assert.equal(routeFor(undefined, {}).uri, 'qemu:///system');
});

test('qemu+ssh: user, port, keyfile, no_verify; the name sent is the URI without transport and its parameters', () => {
  const r = routeFor('qemu+ssh://admin@kvm1.example:2222/system?keyfile=/k/id&no_verify=1');
  assert.ok(r.kind === 'ssh');
  assert.equal(r.name, 'qemu:///system');
  assert.deepEqual(sshArgv(r).slice(0, 14), [
    '-p',
    '2222',
    '-l',
    'admin',
    '-i',
    '/k/id',
    '-T',
    '-e',
    'none',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
  ]);
  assert.deepEqual(sshArgv(r).slice(-4, -1), ['kvm1.example', 'sh', '-c']);
  assert.match(
    remoteCommand(r),
    /^if command -v virt-ssh-helper .* then exec 'virt-ssh-helper' 'qemu:\/\/\/system'; else .*'nc' \$ARG -U '\/var\/run\/libvirt\/libvirt-sock'; fi$/,
  );
  const plain = routeFor('qemu+ssh://kvm1/system');
  assert.ok(plain.kind === 'ssh');
  assert.deepEqual(sshArgv(plain).slice(0, 6), ['-T', '-e', 'none', '-o', 'BatchMode=yes', '--']);
  // Another command over the same options (doctor's questions to the far side), quoted as one word.
  assert.deepEqual(sshArgv(plain, "test -d '/x y'").slice(-4), ['kvm1', 'sh', '-c', `'test -d '\\''/x y'\\'''`]);
  assert.deepEqual(sshArgv(plain, 'true').slice(0, -1), sshArgv(plain).slice(0, -1));
});

test('virsh for what is not spoken natively, with the reason', () => {
  for (const [uri, why] of [
    ['qemu+tls://h/system', /transport 'tls'/],
    ['qemu+tcp://h/system', /transport 'tcp'/],
    ['qemu://h/system', /TLS/],
    ['xen:///system', /driver 'xen'/],
    ['qemu+libssh2://h/system', /transport 'libssh2'/],
  ] as const) {
    const r = routeFor(uri);
    assert.ok(r.kind === 'virsh' && why.test(r.reason), `${uri}: ${JSON.stringify(r)}`);
  }
  assert.throws(() => routeFor('not a uri'), /not a libvirt URI/);
});
