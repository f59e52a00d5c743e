// The provider's XML: disks read from a domain XML as libvirt formats it (backing chains, mirrors, cdroms,
// escaped paths), the disks picked by the config, and the backup and snapshot documents it sends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuiesceError } from '../../../../src/errors.js';
import {
  backupXml,
  checkpointXml,
  parseCheckpointDisks,
  parseDisks,
  snapshotXml,
  withoutParent,
} from '../../../../src/snapshot/libvirt/domain-xml.js';
import { pickDisks } from '../../../../src/snapshot/libvirt/session.js';
import { overlayImage, snapshotFlags } from '../../../../src/snapshot/libvirt/overlay.js';
import { SnapshotCreateFlags } from '../../../../src/libvirt/protocol.js';

const DOMAIN = `<domain type='kvm' id='3'>
  <name>db&amp;01</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/top.qcow2' index='3'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
        <backingStore type='file' index='1'><format type='raw'/><source file='/img/deeper.raw'/><backingStore/></backingStore>
      </backingStore>
      <mirror type='file' job='copy'><source file='/mirror.img'/></mirror>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/it&apos;s'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
  </devices>
</domain>`;

test('disks: the active image (not the backing chain or a mirror), its format, device and read-only state', () => {
  const disks = parseDisks(DOMAIN);
  assert.deepEqual(
    disks.map((d) => [d.name, d.device, d.type, d.source, d.format, d.readonly, d.backed]),
    [
      ['vda', 'disk', 'file', '/var/lib/libvirt/images/top.qcow2', 'qcow2', false, true],
      ['vdb', 'disk', 'block', "/dev/vg0/it's", 'raw', false, false],
      ['sda', 'cdrom', 'file', undefined, 'raw', true, false],
    ],
  );
});

test('picking: "all" takes the writable disks with an image; names must exist, and the error lists the domain\'s disks', () => {
  const disks = parseDisks(DOMAIN);
  const o = { domain: 'db01', guest: 'g' };
  assert.deepEqual(
    pickDisks(disks, 'all', '/b/{guest}-{disk}.img', o).map((p) => p.target),
    ['/b/{guest}-vda.img', '/b/{guest}-vdb.img'],
  );
  assert.throws(
    () => pickDisks(disks, ['vdz'], '/b/{disk}', o),
    (e: QuiesceError) =>
      e.code === 'CONFIG_MISMATCH' && /no disk 'vdz' \(disks: vda, vdb, sda \(read-only cdrom\)\)/.test(e.message),
  );
  assert.throws(() => pickDisks(disks, ['vda', 'vdb'], '/b/same.img', o), /put \{disk\} in the target/);
  assert.throws(() => pickDisks(disks, ['sda'], '/b/{disk}', o), /has no image/);
});

test('backup XML: push mode, a file target per picked disk, every other disk backup=no, paths escaped', () => {
  const disks = parseDisks(DOMAIN);
  const xml = backupXml(disks, [{ disk: disks[0]!, target: "/b/it's <vda>.img" }], 'qcow2');
  assert.equal(
    xml,
    `<domainbackup mode='push'>
  <disks>
    <disk name='vda' backup='yes' type='file'><target file='/b/it&apos;s &lt;vda&gt;.img'/><driver type='qcow2'/></disk>
    <disk name='vdb' backup='no'/>
    <disk name='sda' backup='no'/>
  </disks>
</domainbackup>
`,
  );
});

test('snapshot XML: external qcow2 overlays for the picked disks, snapshot=no for the rest', () => {
  const disks = parseDisks(DOMAIN);
  const xml = snapshotXml('quiesce-x', disks, [{ disk: disks[1]!, target: '/o/vdb.qcow2' }]);
  assert.match(xml, /<name>quiesce-x<\/name>/);
  assert.match(xml, /<disk name='vda' snapshot='no'\/>/);
  assert.match(
    xml,
    /<disk name='vdb' snapshot='external' type='file'><source file='\/o\/vdb.qcow2'\/><driver type='qcow2'\/><\/disk>/,
  );
  assert.match(xml, /<disk name='sda' snapshot='no'\/>/);
});

test('snapshot flags: disk-only and atomic always, no metadata only when the overlay is merged back, reuse-ext only for overlays made before, never quiesce', () => {
  const F = SnapshotCreateFlags;
  assert.equal(snapshotFlags(true, false), F.DISK_ONLY | F.ATOMIC | F.NO_METADATA);
  assert.equal(snapshotFlags(false, false), F.DISK_ONLY | F.ATOMIC);
  assert.equal(snapshotFlags(true, true), F.DISK_ONLY | F.ATOMIC | F.NO_METADATA | F.REUSE_EXT);
  assert.equal(snapshotFlags(false, true), F.DISK_ONLY | F.ATOMIC | F.REUSE_EXT);
  for (const c of [true, false]) for (const r of [true, false]) assert.equal(snapshotFlags(c, r) & F.QUIESCE, 0);
});

test('overlayImage: a qcow2 over the active image, with its format; none for a network disk', () => {
  const [vda, vdb] = parseDisks(DOMAIN);
  assert.deepEqual(overlayImage(vda!), {
    format: 'qcow2',
    backing: { file: '/var/lib/libvirt/images/top.qcow2', format: 'qcow2' },
  });
  assert.deepEqual(overlayImage(vdb!), { format: 'qcow2', backing: { file: "/dev/vg0/it's", format: 'raw' } });
  const [net] = parseDisks(
    `<domain><devices><disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='rbd' name='pool/img'/><target dev='vdc'/></disk></devices></domain>`,
  );
  assert.equal(net!.type, 'network');
  assert.equal(overlayImage(net!), undefined);
});

const CHAIN_DOMAIN = `<domain><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i/a.qcow2'/><target dev='vda'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/i/b.raw'/><target dev='vdb'/></disk>
</devices></domain>`;

test('chain backup XML: <incremental> names the base checkpoint; qcow2 targets; other disks backup=no', () => {
  const all = parseDisks(CHAIN_DOMAIN);
  const picked = pickDisks(all, ['vda'], '/repo/vm/C/I/{disk}.qcow2', { domain: 'd', guest: 'g' });
  const xml = backupXml(all, picked, 'qcow2', { incremental: 'quiesce-20261207T030000Z-ab&c' });
  assert.match(
    xml,
    /^<domainbackup mode='push'>\n {2}<incremental>quiesce-20261207T030000Z-ab&amp;c<\/incremental>\n {2}<disks>/,
  );
  assert.match(
    xml,
    /<disk name='vda' backup='yes' type='file'><target file='\/repo\/vm\/C\/I\/vda\.qcow2'\/><driver type='qcow2'\/><\/disk>/,
  );
  assert.match(xml, /<disk name='vdb' backup='no'\/>/);
  assert.doesNotMatch(backupXml(all, picked, 'qcow2'), /incremental/);
});

test('checkpoint XML: the name, a bitmap on each picked disk, checkpoint=no on the others', () => {
  const all = parseDisks(CHAIN_DOMAIN);
  const picked = pickDisks(all, ['vda'], '/x/{disk}', { domain: 'd', guest: 'g' });
  const xml = checkpointXml('quiesce-20261207T030000Z-abcd', all, picked);
  assert.match(xml, /^<domaincheckpoint>\n {2}<name>quiesce-20261207T030000Z-abcd<\/name>/);
  assert.match(xml, /<disk name='vda' checkpoint='bitmap'\/>/);
  assert.match(xml, /<disk name='vdb' checkpoint='no'\/>/);
  assert.deepEqual(parseCheckpointDisks(xml), [
    { name: 'vda', checkpoint: 'bitmap', bitmap: undefined, size: undefined },
    { name: 'vdb', checkpoint: 'no', bitmap: undefined, size: undefined },
  ]);
});

test('checkpoint disks as checkpoint-dumpxml --size shows them; the <domain> copy inside is not read', () => {
  const dumped = `<domaincheckpoint>
  <name>quiesce-x</name>
  <parent><name>quiesce-w</name></parent>
  <creationTime>1765076400</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='quiesce-x' size='1048576'/>
    <disk name='vdb' checkpoint='no'/>
  </disks>
  <domain type='qemu'><devices><disk type='file' device='disk'><target dev='vdc'/></disk></devices>
    <disks><disk name='vdz' checkpoint='bitmap'/></disks></domain>
</domaincheckpoint>`;
  assert.deepEqual(parseCheckpointDisks(dumped), [
    { name: 'vda', checkpoint: 'bitmap', bitmap: 'quiesce-x', size: 1048576 },
    { name: 'vdb', checkpoint: 'no', bitmap: undefined, size: undefined },
  ]);
  assert.deepEqual(parseCheckpointDisks('<domaincheckpoint><name>n</name></domaincheckpoint>'), []);
  // For a redefine after the parent was deleted: the checkpoint's own <parent> goes, the rest stays.
  const alone = withoutParent(dumped);
  assert.doesNotMatch(alone, /quiesce-w/);
  assert.match(alone, /<name>quiesce-x<\/name>/);
  assert.equal(alone.slice(alone.indexOf('<domain ')), dumped.slice(dumped.indexOf('<domain ')));
  assert.deepEqual(parseCheckpointDisks(alone), parseCheckpointDisks(dumped));
});
