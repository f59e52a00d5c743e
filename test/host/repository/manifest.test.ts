// The manifest's optional checkpoint (provider libvirt): read back when well formed, refused by field otherwise;
// manifests without one (provider qmp, older runs) stay valid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateManifest } from '../../../src/repository/manifest.js';

const ID = '20261207T030000Z-abcd';
const base = {
  version: 1,
  id: ID,
  guest: 'vm',
  time: '2026-12-07T03:00:00.000Z',
  level: 'full',
  chain: ID,
  parent: null,
  bitmap: `quiesce-${ID}`,
  reason: 'no chain to continue yet',
  disks: [
    { name: 'vda', node: '/i/a.qcow2', virtualSize: 1 << 26, file: 'vda.qcow2', format: 'qcow2', bytesWritten: 0 },
  ],
  consistency: 'filesystem',
  frozenWindowMs: 12,
  quiesceVersion: '0.1.0',
  agentVersion: null,
  complete: true,
};

test('a manifest without a checkpoint is valid (provider qmp, older runs)', () => {
  assert.equal(validateManifest(base, 'm.json').checkpoint, undefined);
});

test('a checkpoint with its name and XML is read back', () => {
  const checkpoint = { name: `quiesce-${ID}`, xml: '<domaincheckpoint/>' };
  assert.deepEqual(validateManifest({ ...base, checkpoint }, 'm.json').checkpoint, checkpoint);
});

for (const [what, checkpoint, field] of [
  ['not an object', 'quiesce-x', 'checkpoint'],
  ['no name', { xml: '<x/>' }, 'checkpoint.name'],
  ['an empty XML', { name: 'n', xml: '' }, 'checkpoint.xml'],
] as const)
  test(`a checkpoint with ${what} is refused, naming ${field}`, () => {
    assert.throws(
      () => validateManifest({ ...base, checkpoint }, 'm.json'),
      (e: Error) => e.message === `m.json: not a quiesce manifest (${field})`,
    );
  });
