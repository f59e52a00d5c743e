/**
 * guest-fstrim without touching a filesystem: the mount list and FITRIM are
 * fakes. The reply lists mounts last first, each with the kernel's figures or
 * the reference's error text; the addon and fstrim(8) backends turn their
 * results into the same outcomes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  addonTrimBackend,
  fstrimCommands,
  fstrimTrimBackend,
  trimResult,
  type TrimBackend,
  type TrimOutcome,
} from '../../../agent/src/commands/fstrim.js';
import type { AgentContext } from '../../../agent/src/context.js';
import type { FsMount } from '../../../agent/src/freeze/mounts.js';
import type { AgentLogEvent } from '../../../agent/src/log.js';
import { encode } from '../../../agent/src/protocol/index.js';

const logs: AgentLogEvent[] = [];
const ctx = { log: (e: AgentLogEvent) => void logs.push(e) } as unknown as AgentContext;
const mount = (dir: string): FsMount => ({ dir, type: 'ext4', source: '/dev/x', major: 7, minor: 0 });

function fakeBackend(outcomes: Record<string, TrimOutcome>): TrimBackend & { calls: [string, bigint][] } {
  const calls: [string, bigint][] = [];
  return {
    name: 'addon',
    calls,
    trim: async (path, minimum) => {
      calls.push([path, minimum]);
      return outcomes[path]!;
    },
  };
}

async function fstrim(backend: TrimBackend, dirs: string[], args: Record<string, unknown> = {}): Promise<string> {
  const family = fstrimCommands(ctx, { backend, mounts: () => dirs.map(mount) });
  const command = family.commands[0]!;
  assert.equal(command.name, 'guest-fstrim');
  return encode((await command.run(args, ctx)) as never);
}

const fail = (stage: 'open' | 'ioctl', code: string, text: string): TrimOutcome => ({ ok: false, stage, code, text });

describe('guest-fstrim', () => {
  test('every mount in mount order, one at a time; the reply lists them last first', async () => {
    const backend = fakeBackend({
      '/': { ok: true, trimmed: 10n, minimum: 0n },
      '/a': fail('ioctl', 'EOPNOTSUPP', 'Operation not supported'),
      '/b': fail('open', 'ENOENT', 'No such file or directory'),
    });
    logs.length = 0;
    const reply = await fstrim(backend, ['/', '/a', '/b']);
    assert.deepEqual(backend.calls, [
      ['/', 0n],
      ['/a', 0n],
      ['/b', 0n],
    ]);
    assert.equal(
      reply,
      '{"paths": [{"path": "/b", "error": "failed to open: No such file or directory"}, ' +
        '{"path": "/a", "error": "trim not supported"}, {"minimum": 0, "path": "/", "trimmed": 10}]}',
    );
    assert.deepEqual(logs, [{ kind: 'info', message: 'guest-fstrim called' }]);
  });

  test('the minimum goes to every mount; no mounts give an empty list', async () => {
    const backend = fakeBackend({ '/': { ok: true, trimmed: 0n, minimum: 4096n } });
    assert.equal(
      await fstrim(backend, ['/'], { minimum: 4096n }),
      '{"paths": [{"minimum": 4096, "path": "/", "trimmed": 0}]}',
    );
    assert.deepEqual(backend.calls, [['/', 4096n]]);
    assert.equal(await fstrim(backend, []), '{"paths": []}');
  });

  const texts: [TrimOutcome, string][] = [
    [fail('ioctl', 'EOPNOTSUPP', 'Operation not supported'), 'trim not supported'],
    [fail('ioctl', 'ENOTTY', 'Inappropriate ioctl for device'), 'trim not supported'],
    [fail('ioctl', 'EROFS', 'Read-only file system'), 'failed to trim: Read-only file system'],
    [fail('ioctl', 'EINVAL', 'Invalid argument'), 'failed to trim: Invalid argument'],
    [fail('open', 'EACCES', 'Permission denied'), 'failed to open: Permission denied'],
    // Open failures are reported as such even for the errnos that mean "not supported" from FITRIM.
    [fail('open', 'ENOTTY', 'Inappropriate ioctl for device'), 'failed to open: Inappropriate ioctl for device'],
  ];
  for (const [outcome, text] of texts) {
    test(`${outcome.ok ? '' : `${outcome.stage} ${outcome.code}`}: "${text}"`, () => {
      assert.deepEqual(trimResult('/m', outcome), { path: '/m', error: text });
    });
  }
});

describe('the addon backend', () => {
  test("the kernel's figures; minimums wrap like the reference's int64/u64 assignments", async () => {
    const seen: bigint[] = [];
    const backend = addonTrimBackend({
      fitrim: async (_path, minlen) => {
        seen.push(minlen);
        return [0, 123n, minlen];
      },
      strerror: () => 'unused',
    });
    assert.deepEqual(await backend.trim('/m', -1n), { ok: true, trimmed: 123n, minimum: -1n });
    assert.deepEqual(seen, [(1n << 64n) - 1n]);
  });

  test('errno > 0 is a FITRIM failure, < 0 an open failure, with the C library text', async () => {
    const backend = (rc: number) =>
      addonTrimBackend({ fitrim: async () => [rc, 0n, 0n], strerror: (n) => `text ${n}` });
    assert.deepEqual(await backend(95).trim('/m', 0n), {
      ok: false,
      stage: 'ioctl',
      code: 'EOPNOTSUPP',
      text: 'text 95',
    });
    assert.deepEqual(await backend(25).trim('/m', 0n), { ok: false, stage: 'ioctl', code: 'ENOTTY', text: 'text 25' });
    assert.deepEqual(await backend(-2).trim('/m', 0n), { ok: false, stage: 'open', code: 'ENOENT', text: 'text 2' });
  });
});

describe('the fstrim(8) backend (no addon)', () => {
  let dir: string;
  /** A stand-in fstrim(8) that prints what the real one prints for the mount named in its last argument. */
  let program: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'quiesce-fstrim-fake-'));
    program = join(dir, 'fstrim');
    writeFileSync(
      program,
      `#!/bin/sh
echo "$*" >> "${dir}/calls"
for last; do :; done
case "$last" in
/ok) echo "/ok: 54.7 MiB (57367552 bytes) trimmed" ;;
/nodiscard) echo "fstrim: /nodiscard: the discard operation is not supported" >&2; exit 1 ;;
/ro) echo "fstrim: /ro: FITRIM ioctl failed: Read-only file system" >&2; exit 32 ;;
*) echo "fstrim: cannot open $last: No such file or directory" >&2; exit 32 ;;
esac
`,
      { mode: 0o755 },
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('bytes trimmed from its verbose line; the minimum reported is the one asked for', async () => {
    const b = fstrimTrimBackend('test', program);
    assert.deepEqual(await b.trim('/ok', 1048576n), { ok: true, trimmed: 57367552n, minimum: 1048576n });
  });

  test('its messages map to the same outcomes as FITRIM errors', async () => {
    const b = fstrimTrimBackend('test', program);
    assert.equal(trimResult('/nodiscard', await b.trim('/nodiscard', 0n)).error, 'trim not supported');
    assert.equal(trimResult('/ro', await b.trim('/ro', 0n)).error, 'failed to trim: Read-only file system');
    assert.equal(trimResult('/gone', await b.trim('/gone', 0n)).error, 'failed to open: No such file or directory');
  });

  test('a program that cannot run: each mount says why', async () => {
    const b = fstrimTrimBackend('test', join(dir, 'no-such-fstrim'));
    assert.match(String(trimResult('/ok', await b.trim('/ok', 0n)).error), /^failed to trim: .*no-such-fstrim ENOENT/);
  });
});
