/**
 * guest-fstrim against qemu-ga 7.2, both agents chrooted into a root of the
 * test's own (fstrim-rig.ts) whose mount table holds only loop mounts made
 * here: ext4 that can trim, ext4 on a device without discard, ext4 mounted
 * ro,noload, an ext4 mount hidden under a later tmpfs, and a tmpfs. Each
 * agent's mount table is checked from outside before every request. Replies
 * must be byte-identical; so must the refusals in frozen mode and under -b.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DANGEROUS_REFERENCE_COMMANDS } from '../differential/pair.js';
import { MOUNTS, TrimRoot, trimRootSkipReason, type ChrootAgent } from './fstrim-rig.js';

const SKIP = trimRootSkipReason();
/** The reference's dangerous commands stay blocked, guest-fstrim excepted. */
const REF_BLOCK = ['-b', DANGEROUS_REFERENCE_COMMANDS.filter((c) => c !== 'guest-fstrim').join(',')];
const OURS = ['--fsfreeze-include='];

type Info = { return: { supported_commands: { name: string; enabled: boolean; 'success-response': boolean }[] } };
const entry = (reply: string, name: string) =>
  JSON.stringify((JSON.parse(reply) as Info).return.supported_commands.find((c) => c.name === name));
const neighbours = (reply: string, name: string) => {
  const names = (JSON.parse(reply) as Info).return.supported_commands.map((c) => c.name);
  const i = names.indexOf(name);
  return [names[i - 1], names[i + 1]];
};

describe('guest-fstrim against qemu-ga, in a root holding only test mounts', { skip: SKIP }, () => {
  let root: TrimRoot;
  before(() => {
    root = TrimRoot.create();
  });
  after(async () => {
    await root?.close();
  });

  describe('thawed', () => {
    let ours: ChrootAgent;
    let ref: ChrootAgent;
    before(async () => {
      ours = await root.start('quiesce', { args: OURS });
      ref = await root.start('qemu-ga', { args: REF_BLOCK });
    });

    /** The same request to each, the trimmable filesystem mounted afresh before each (so each trims it fully). */
    async function fresh(request: object): Promise<{ ours: string; ref: string }> {
      root.remountDiscard();
      const o = await ours.ask(request);
      root.remountDiscard();
      const r = await ref.ask(request);
      return { ours: o, ref: r };
    }

    test('both agents see the test mounts and nothing else with a device', () => {
      ours.assertSafe();
      ref.assertSafe();
      assert.equal(root.devices.size, 4);
    });

    const variants: [string, Record<string, unknown> | undefined][] = [
      ['no arguments', undefined],
      ['no minimum', {}],
      ['minimum 0', { minimum: 0 }],
      ['minimum 4096', { minimum: 4096 }],
      ['minimum 1 MiB', { minimum: 1048576 }],
      ['minimum 64 MiB (nothing that large is free)', { minimum: 67108864 }],
      ['minimum -1 (u64 max: the kernel refuses)', { minimum: -1 }],
    ];
    for (const [name, args] of variants) {
      test(`${name}: byte-identical replies`, async () => {
        const { ours: o, ref: r } = await fresh(
          args ? { execute: 'guest-fstrim', arguments: args } : { execute: 'guest-fstrim' },
        );
        assert.equal(o, r);
        assert.match(o, /^\{"return": \{"paths": \[/);
      });
    }

    test('each mount gets its own result, last mounted first; the tmpfs is not listed', async () => {
      const { ours: o, ref: r } = await fresh({ execute: 'guest-fstrim' });
      assert.equal(o, r);
      const paths = (JSON.parse(o) as { return: { paths: { path: string; trimmed?: number; error?: string }[] } })
        .return.paths;
      // remountDiscard() made the trimmable one the newest mount.
      assert.deepEqual(
        paths.map((p) => p.path),
        [MOUNTS.discard, MOUNTS.shadowed, MOUNTS.readOnly, MOUNTS.noDiscard],
      );
      assert.ok(paths[0]!.trimmed! > 0);
      assert.deepEqual(
        paths.slice(1).map((p) => p.error),
        ['failed to open: No such file or directory', 'failed to trim: Read-only file system', 'trim not supported'],
      );
    });

    test('a second trim right after the first: the same figures (ext4 skips groups it trimmed)', async () => {
      const twice = async (a: ChrootAgent) => {
        root.remountDiscard();
        await a.ask({ execute: 'guest-fstrim' });
        return a.ask({ execute: 'guest-fstrim' });
      };
      const [o, r] = [await twice(ours), await twice(ref)];
      assert.equal(o, r);
      assert.match(o, /"trimmed": 0\}/);
    });

    const bad: [string, unknown][] = [
      ['minimum as a string', { minimum: '4096' }],
      ['minimum as a fraction', { minimum: 1.5 }],
      ['minimum beyond int64', { minimum: 2 ** 64 }],
      ['minimum at int64 max', { minimum: 2 ** 62 }],
      ['an unexpected member', { minimum: 0, verbose: true }],
      ['arguments not an object', []],
    ];
    for (const [name, args] of bad) {
      test(`${name}: the same error`, async () => {
        const request = { execute: 'guest-fstrim', arguments: args };
        const [o, r] = [await ours.ask(request), await ref.ask(request)];
        assert.equal(o, r);
        assert.match(o, /"error"/);
      });
    }

    test('guest-info: guest-fstrim in the same place, with the same flags', async () => {
      const [o, r] = [await ours.ask({ execute: 'guest-info' }), await ref.ask({ execute: 'guest-info' })];
      assert.equal(entry(o, 'guest-fstrim'), entry(r, 'guest-fstrim'));
      assert.deepEqual(neighbours(o, 'guest-fstrim'), neighbours(r, 'guest-fstrim'));
      assert.deepEqual(neighbours(o, 'guest-fstrim'), ['guest-suspend-disk', 'guest-fsfreeze-thaw']);
    });
  });

  describe('frozen (both started over a frozen-state marker; never thawed)', () => {
    let ours: ChrootAgent;
    let ref: ChrootAgent;
    before(async () => {
      ours = await root.start('quiesce', { args: OURS, frozen: true });
      ref = await root.start('qemu-ga', { args: REF_BLOCK, frozen: true });
    });
    after(async () => {
      // A frozen reference stopping cleanly thaws what it sees: killed instead.
      await Promise.all([ours?.kill(), ref?.kill()]);
    });

    test('the agents are frozen', async () => {
      assert.equal(await ours.ask({ execute: 'guest-fsfreeze-status' }), '{"return": "frozen"}');
      assert.equal(await ref.ask({ execute: 'guest-fsfreeze-status' }), '{"return": "frozen"}');
    });

    test('guest-fstrim: the same refusal', async () => {
      const [o, r] = [await ours.ask({ execute: 'guest-fstrim' }), await ref.ask({ execute: 'guest-fstrim' })];
      assert.equal(o, r);
      assert.equal(
        o,
        '{"error": {"class": "CommandNotFound", "desc": "Command guest-fstrim has been disabled: the agent is in frozen state"}}',
      );
    });

    test('guest-info: the same flags', async () => {
      const [o, r] = [await ours.ask({ execute: 'guest-info' }), await ref.ask({ execute: 'guest-info' })];
      assert.equal(entry(o, 'guest-fstrim'), entry(r, 'guest-fstrim'));
      assert.match(entry(o, 'guest-fstrim'), /"enabled":false/);
    });
  });

  describe('blocked with -b', () => {
    let ours: ChrootAgent;
    let ref: ChrootAgent;
    before(async () => {
      ours = await root.start('quiesce', { args: [...OURS, '-b', 'guest-fstrim'] });
      ref = await root.start('qemu-ga', { args: ['-b', DANGEROUS_REFERENCE_COMMANDS.join(',')] });
    });
    after(async () => {
      await Promise.all([ours?.stop(), ref?.stop()]);
    });

    test('guest-fstrim: the same refusal, and the same flags in guest-info', async () => {
      const [o, r] = [await ours.ask({ execute: 'guest-fstrim' }), await ref.ask({ execute: 'guest-fstrim' })];
      assert.equal(o, r);
      assert.equal(o, '{"error": {"class": "CommandNotFound", "desc": "Command guest-fstrim has been disabled"}}');
      const [oi, ri] = [await ours.ask({ execute: 'guest-info' }), await ref.ask({ execute: 'guest-info' })];
      assert.equal(entry(oi, 'guest-fstrim'), entry(ri, 'guest-fstrim'));
    });
  });
});
