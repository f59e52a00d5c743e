// A saved checkpoint's XML redefined on a domain created again (a transient domain gets a new UUID): libvirt
// refuses a redefine whose <domain> copy names another UUID, so the saved XML takes the domain's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forDomain, uuidText } from '../../../../src/snapshot/libvirt/chain.js';

const SAVED = `<domaincheckpoint>
  <name>quiesce-20261207T044609Z-f8a6</name>
  <creationTime>1796618769</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='quiesce-20261207T044609Z-f8a6'/>
  </disks>
  <domain type='qemu'>
    <name>vm</name>
    <uuid>9da16c0a-4dd3-4341-a1d8-cfe4cd84d371</uuid>
    <devices><disk type='file' device='disk'><source file='/x/data.qcow2'/><target dev='vda' bus='virtio'/></disk></devices>
  </domain>
</domaincheckpoint>
`;

test('uuidText: 16 bytes in libvirt’s 8-4-4-4-12 form', () => {
  assert.equal(
    uuidText(Buffer.from('6746550bfb5642078cb91b917d01fea4', 'hex')),
    '6746550b-fb56-4207-8cb9-1b917d01fea4',
  );
});

test('forDomain: the <domain> copy’s UUID becomes the domain’s; nothing else changes', () => {
  const uuid = Buffer.from('6746550bfb5642078cb91b917d01fea4', 'hex');
  const out = forDomain(SAVED, uuid);
  assert.equal(out, SAVED.replace('9da16c0a-4dd3-4341-a1d8-cfe4cd84d371', '6746550b-fb56-4207-8cb9-1b917d01fea4'));
  assert.equal(forDomain(out, uuid), out, 'the same UUID: unchanged');
});

test('forDomain: XML without a <domain> copy is left as it is', () => {
  const bare =
    "<domaincheckpoint><name>c</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>";
  assert.equal(forDomain(bare, Buffer.alloc(16, 1)), bare);
});
