import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuiesceError } from '../../../src/errors.js';
import { Journal, ownerAlive } from '../../../src/workflow/journal.js';

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), 'journal-'))));
after(() => rmSync(dir, { recursive: true, force: true }));

const entry = (guest: string) => ({
  runId: 'R1',
  job: 'j',
  guest,
  address: `unix:/x/${guest}`,
  connector: { kind: 'socket' as const, path: `/x/${guest}` },
});

test('a record is written whole, private, and listed; this process owns it', async () => {
  const j = new Journal(join(dir, 'a'));
  const r = await j.write(entry('web/01'));
  const files = readdirSync(j.dir);
  assert.equal(files.length, 1, 'no temp file left beside it');
  assert.equal(statSync(join(j.dir, files[0]!)).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(join(j.dir, files[0]!), 'utf8')), r);
  const { records, unreadable } = j.list();
  assert.deepEqual(records, [r]);
  assert.deepEqual(unreadable, []);
  assert.equal(ownerAlive(r), true);
});

test('records written at once (a fleet) are all durable and listed, and a later write still lands', async () => {
  const j = new Journal(join(dir, 'many'));
  const written = await Promise.all(Array.from({ length: 64 }, (_, i) => j.write(entry(`g${i}`))));
  const late = await j.write(entry('late'));
  const { records, unreadable } = j.list();
  assert.deepEqual(records.map((r) => r.guest).sort(), [...written, late].map((r) => r.guest).sort());
  assert.deepEqual(unreadable, []);
  assert.equal(readdirSync(j.dir).length, 65, 'no temp file left');
});

test('update adds the frozen count; a removal queued after it is never undone by it', async () => {
  const j = new Journal(join(dir, 'b'));
  const r = await j.write(entry('g'));
  // Not awaited in between, as the freeze guard does while frozen.
  const u = j.update(r, { frozen: 3 });
  const rm = j.remove('R1', 'g');
  await Promise.all([u, rm]);
  assert.deepEqual(readdirSync(j.dir), []);
  const r2 = await j.write(entry('h'));
  await j.update(r2, { frozen: 2 });
  assert.equal(j.list().records[0]!.frozen, 2);
});

test('a write that fails leaves nothing behind and says JOURNAL', async () => {
  const stateDir = join(dir, 'c');
  writeFileSync(stateDir, 'a file where the state dir should be');
  const err = await new Journal(stateDir).write(entry('g')).catch((e: unknown) => e);
  assert.ok(err instanceof QuiesceError);
  assert.equal(err.code, 'JOURNAL');
  assert.match(err.message, /cannot write the journal record/);
});

test('a temp file of an interrupted write is not a record; a corrupt record is reported, not dropped', async () => {
  const j = new Journal(join(dir, 'd'));
  mkdirSync(j.dir, { recursive: true });
  writeFileSync(join(j.dir, 'R--g.json.tmp-123'), '{"half');
  writeFileSync(join(j.dir, 'R--h.json'), '');
  const { records, unreadable } = j.list();
  assert.deepEqual(records, []);
  assert.deepEqual(unreadable, [join(j.dir, 'R--h.json')]);
});

test(
  'a full disk: the write fails with ENOSPC and leaves no empty record',
  { skip: process.getuid?.() !== 0 ? 'needs root to mount a tmpfs' : false },
  async () => {
    const mnt = mkdtempSync(join(tmpdir(), 'journal-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
    try {
      const j = new Journal(mnt);
      await j.write(entry('first'));
      // Fill what is left.
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${join(mnt, 'fill')}`, 'bs=4k'], { stdio: 'ignore' });
      } catch {
        // dd stops at ENOSPC, as intended.
      }
      const err = await j.write(entry('second')).catch((e: unknown) => e);
      assert.ok(err instanceof QuiesceError && err.code === 'JOURNAL', String(err));
      assert.match((err as Error).message, /ENOSPC/);
      assert.deepEqual(readdirSync(j.dir).sort(), [readdirSync(j.dir).find((n) => n.includes('first'))!]);
      assert.equal(j.list().unreadable.length, 0);
    } finally {
      execFileSync('umount', [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  },
);
