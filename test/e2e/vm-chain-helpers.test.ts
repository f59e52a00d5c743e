// The VM helpers backup-chain tests stand on, against a real TCG guest with either agent and a qcow2
// data disk: the writer paused and resumed; checksums of /data read in the guest agree with those read
// from a `qemu-img convert -U` copy of the running guest's image (no stop, no freeze); a file of known
// content written through the agent; disks hot-added between two copies show up in query-block; a
// persistent dirty bitmap can live on a qcow2 node and not on a raw one (why chains need qcow2).
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { addDisk, imageChecksums } from '../helpers/vm/disks.js';
import {
  diffChecksums,
  guestChecksums,
  guestSh,
  guestSync,
  pauseWriter,
  resumeWriter,
  writeGuestFile,
} from '../helpers/vm/guest-ops.js';
import { bootGuest, DATA_DEVICE, DATA_NODE, guestUnavailable, type Guest } from '../helpers/vm/qemu.js';
import { Qmp, QmpError } from '../helpers/vm/qmp.js';
import { lastWriterNumber, WRITER_ARG, writerNumbers } from '../helpers/vm/writer.js';

const unavailable =
  guestUnavailable() ??
  (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
  (spawnSync('qemu-img', ['--version']).status === 0 ? undefined : 'no qemu-img (qemu-utils)') ??
  (spawnSync('debugfs', ['-V']).status === 0 ? undefined : 'no debugfs (e2fsprogs)');
const TIMEOUT = 300_000;
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];

/** Waits until the writer has announced at least `count` more files than `from`. */
async function writerRuns(
  g: Guest,
  count: number,
  from = lastWriterNumber(g.console()),
  timeoutMs = 120_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (lastWriterNumber(g.console()) < from + count) {
    if (Date.now() > deadline)
      throw new Error(`the writer did not write ${count} files in ${timeoutMs} ms (from ${from})`);
    await sleep(100);
  }
}

interface BlockInfo {
  device: string;
  qdev?: string;
  inserted?: {
    'node-name': string;
    drv: string;
    file: string;
    'dirty-bitmaps'?: { name: string; persistent: boolean; recording: boolean }[];
  };
}

/** query-block's entry for a device id (qdev is the id, or a QOM path under /machine/peripheral/ID/). */
function blockOf(blocks: BlockInfo[], id: string): BlockInfo | undefined {
  return blocks.find((b) => b.qdev === id || b.qdev?.startsWith(`/machine/peripheral/${id}/`));
}

for (const kind of KINDS) {
  describe(
    `VM chain helpers: a TCG guest running ${kind}, qcow2 data disk, writer`,
    { skip: unavailable, timeout: TIMEOUT },
    () => {
      let guest: Guest | undefined;
      let pausedAt = 0;

      before(async () => {
        guest = await bootGuest({
          agent: kind,
          dataFormat: 'qcow2',
          extraDisks: [{ mb: 8, format: 'raw' }],
          kernelArgs: [WRITER_ARG],
          dataDiskMB: 64,
        });
        await writerRuns(guest, 5, 0);
      });
      after(async () => {
        await guest?.stop();
      });

      test('the data disk is a qcow2 v3 image opened as qcow2', async (t: TestContext) => {
        const g = guest!;
        t.diagnostic(
          `${kind}: boot ${g.timings.agentReadyMs} ms to the agent (initrd ${g.timings.initrdBuilt ? 'built' : 'cached'})`,
        );
        assert.equal(g.dataFormat, 'qcow2');
        assert.match(g.dataImage, /\.qcow2$/);
        const info = JSON.parse(
          spawnSync('qemu-img', ['info', '-U', '--output=json', g.dataImage], { encoding: 'utf8' }).stdout,
        ) as { format: string; 'format-specific'?: { data?: { compat?: string } } };
        assert.equal(info.format, 'qcow2');
        assert.equal(info['format-specific']?.data?.compat, '1.1');
        const qmp = await Qmp.open(g.qmpSocket);
        try {
          const vda = blockOf(await qmp.execute<BlockInfo[]>('query-block'), DATA_DEVICE);
          assert.equal(vda?.inserted?.['node-name'], DATA_NODE);
          assert.equal(vda?.inserted?.drv, 'qcow2');
        } finally {
          qmp.close();
        }
      });

      test('pauseWriter → guestChecksums equals imageChecksums of the running guest’s image (qemu-img convert -U)', async (t: TestContext) => {
        const g = guest!;
        let started = Date.now();
        pausedAt = await pauseWriter(g);
        const pauseMs = Date.now() - started;
        assert.ok(pausedAt >= 5, `paused after file ${pausedAt}`);
        const since = g.consoleOffset();

        started = Date.now();
        const blob = await writeGuestFile(g, '/data/chain/blob', { bytes: 2 << 20, seed: `chain-${kind}` });
        const writeMs = Date.now() - started;

        started = Date.now();
        const inGuest = await guestChecksums(g);
        const guestMs = Date.now() - started;
        assert.equal(
          inGuest.get('/chain/blob'),
          blob.sha256,
          'the file written through the agent reads back as written',
        );
        assert.ok(inGuest.has('/w/log'));
        assert.ok(!inGuest.has('/w/tmp'), 'paused between two files: no half-written file');
        assert.ok(![...inGuest.keys()].some((p) => p.startsWith('/lost+found')));
        const log = (await guestSh(g, 'tail -n 1 /data/w/log')).trim();
        assert.equal(log, String(pausedAt), 'the last file logged is the one the writer paused after');

        started = Date.now();
        await guestSync(g);
        const fromImage = imageChecksums(g.dataImage, g.dataFormat);
        const imageMs = Date.now() - started;
        assert.deepEqual(diffChecksums(inGuest, fromImage, ['guest', 'image']), []);
        assert.equal(fromImage.size, inGuest.size);
        // For the record: what debugfs sees without replaying the journal of the live filesystem's copy.
        const unreplayed = diffChecksums(inGuest, imageChecksums(g.dataImage, g.dataFormat, { replayJournal: false }), [
          'guest',
          'image',
        ]);

        // Still paused: nothing more was written, in the guest's eyes or on the console.
        await sleep(1500);
        assert.deepEqual(diffChecksums(inGuest, await guestChecksums(g), ['before', 'after']), []);
        assert.deepEqual(
          writerNumbers(g.console().slice(since)).filter((n) => n > pausedAt),
          [],
          'the writer wrote while paused',
        );
        t.diagnostic(
          `${kind}: pause ${pauseMs} ms (after file ${pausedAt}); writeGuestFile 2 MiB ${writeMs} ms; guestChecksums of ${inGuest.size} files ${guestMs} ms; sync + imageChecksums ${imageMs} ms; without the journal replay ${unreplayed.length} difference(s)${unreplayed.length ? ` (${unreplayed.slice(0, 3).join('; ')})` : ''}`,
        );
      });

      test('resumeWriter: the writer goes on', async () => {
        const g = guest!;
        await resumeWriter(g);
        await writerRuns(g, 3, pausedAt);
        // Pausing again works too (the second pause of a chain test).
        const again = await pauseWriter(g);
        assert.ok(again >= pausedAt + 3);
        await resumeWriter(g);
        await writerRuns(g, 1, again);
      });

      test('a boot-time vdb; addDisk hot-adds vdc (qcow2) and vdd (raw); a persistent dirty bitmap takes qcow2', async (t: TestContext) => {
        const g = guest!;
        const qmp = await Qmp.open(g.qmpSocket);
        try {
          // On the qcow2 data node: persistent works.
          await qmp.execute('block-dirty-bitmap-add', { node: DATA_NODE, name: 'chain0', persistent: true });

          const vdc = await addDisk(g, { mb: 16, format: 'qcow2' }, qmp);
          const vdd = await addDisk(g, { mb: 16, format: 'raw', ext4: true }, qmp);
          assert.deepEqual(
            [vdc.device, vdc.node, vdc.fileNode, vdd.device, vdd.node, vdd.fileNode],
            ['vdc', 'data2', 'file2', 'vdd', 'data3', 'file3'],
          );
          const blocks = await qmp.execute<BlockInfo[]>('query-block');
          const b = blockOf(blocks, 'vdb');
          const c = blockOf(blocks, 'vdc');
          const d = blockOf(blocks, 'vdd');
          assert.deepEqual(
            g.extraDisks.map((x) => [x.device, x.node, x.format]),
            [['vdb', 'data1', 'raw']],
          );
          assert.equal(b?.inserted?.['node-name'], 'data1');
          assert.equal(b?.inserted?.drv, 'raw');
          assert.equal(b?.inserted?.file, g.extraDisks[0]!.image);
          assert.equal(c?.inserted?.['node-name'], 'data2');
          assert.equal(c?.inserted?.drv, 'qcow2');
          assert.equal(c?.inserted?.file, vdc.image);
          assert.equal(d?.inserted?.['node-name'], 'data3');
          assert.equal(d?.inserted?.drv, 'raw');
          assert.equal(d?.inserted?.file, vdd.image);
          const vda = blockOf(blocks, DATA_DEVICE);
          assert.deepEqual(
            vda?.inserted?.['dirty-bitmaps']?.map((x) => [x.name, x.persistent]),
            [['chain0', true]],
          );

          await qmp.execute('block-dirty-bitmap-add', { node: vdc.node, name: 'chain0', persistent: true });
          // On raw: a bitmap, yes; a persistent one, no — raw has nowhere to store it.
          await qmp.execute('block-dirty-bitmap-add', { node: vdd.node, name: 'volatile', persistent: false });
          await assert.rejects(
            qmp.execute('block-dirty-bitmap-add', { node: vdd.node, name: 'chain0', persistent: true }),
            (err: unknown) => {
              assert.ok(err instanceof QmpError, String(err));
              t.diagnostic(`${kind}: persistent bitmap on raw: ${err.errorClass}: ${err.desc}`);
              return true;
            },
          );

          // The next one takes the next free names; without a connection given, addDisk uses the second
          // monitor (qmpSocket2) while this one is still held (as the code under test would hold it).
          const vde = await addDisk(g, { mb: 8, format: 'qcow2' });
          assert.equal(vde.device, 'vde');
          assert.equal(blockOf(await qmp.execute<BlockInfo[]>('query-block'), 'vde')?.inserted?.['node-name'], 'data4');
        } finally {
          qmp.close();
        }
        // Not asserted: whether the guest's kernel noticed (ACPI PCI hotplug under TCG).
        await sleep(1000);
        t.diagnostic(
          `${kind}: the guest's /sys/block: ${(await guestSh(g, 'ls /sys/block')).trim().split(/\s+/).join(' ')}`,
        );
        // The writer never stopped.
        await writerRuns(g, 1);
      });
    },
  );
}
