import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_FREEZE_LIMIT,
  DEFAULT_HOOK_TIMEOUT,
  dumpConfig,
  parseOptions,
  UsageError,
} from '../../../agent/src/config/options.js';

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), 'quiesce-opts-'))));
after(() => rmSync(dir, { recursive: true, force: true }));

const noConf = (): NodeJS.ProcessEnv => ({ QGA_CONF: join(dir, 'none.conf') });

function withConf(text: string): NodeJS.ProcessEnv {
  const path = join(dir, `c${Math.random()}.conf`);
  writeFileSync(path, text);
  return { QGA_CONF: path };
}

describe('fsfreeze options', () => {
  test('defaults: every mount, 30 s hook timeout, 600 s freeze limit', () => {
    const { config } = parseOptions([], noConf());
    assert.equal(config.fsfreezeInclude, undefined);
    assert.equal(config.fsfreezeHookTimeout, DEFAULT_HOOK_TIMEOUT);
    assert.equal(config.fsfreezeLimit, DEFAULT_FREEZE_LIMIT);
    assert.equal(DEFAULT_HOOK_TIMEOUT, 30);
    assert.equal(DEFAULT_FREEZE_LIMIT, 600);
  });

  test('long flags, attached or separate, the include list comma-separated and repeatable, paths normalised', () => {
    const { config } = parseOptions(
      [
        '--fsfreeze-include=/mnt/a,/mnt/b/',
        '--fsfreeze-include',
        '/mnt//c',
        '--fsfreeze-hook-timeout=5',
        '--fsfreeze-limit',
        '0',
      ],
      noConf(),
    );
    assert.deepEqual(config.fsfreezeInclude, ['/mnt/a', '/mnt/b', '/mnt/c']);
    assert.equal(config.fsfreezeHookTimeout, 5);
    assert.equal(config.fsfreezeLimit, 0);
  });

  test('an empty include list means nothing can be frozen (not "everything")', () => {
    assert.deepEqual(parseOptions(['--fsfreeze-include='], noConf()).config.fsfreezeInclude, []);
  });

  test('[general] keys of the same names, the command line winning', () => {
    const env = withConf('[general]\nfsfreeze-include=/data;/srv\nfsfreeze-hook-timeout=12\nfsfreeze-limit=90\n');
    const { config } = parseOptions([], env);
    assert.deepEqual(config.fsfreezeInclude, ['/data', '/srv']);
    assert.equal(config.fsfreezeHookTimeout, 12);
    assert.equal(config.fsfreezeLimit, 90);
    assert.equal(parseOptions(['--fsfreeze-limit=7'], env).config.fsfreezeLimit, 7);
  });

  test('bad values are usage errors naming the key', () => {
    const bad: [string[], RegExp][] = [
      [['--fsfreeze-limit=-1'], /^fsfreeze-limit must be a number of seconds from 0 to \d+: -1$/],
      [['--fsfreeze-hook-timeout=1.5'], /^fsfreeze-hook-timeout must be a number of seconds/],
      [['--fsfreeze-limit=99999999999'], /^fsfreeze-limit must be/],
      [['--fsfreeze-include=relative/path'], /^fsfreeze-include paths must be absolute: relative\/path$/],
      [['--fsfreeze-limit'], /^option '--fsfreeze-limit' requires an argument$/],
    ];
    for (const [argv, re] of bad)
      assert.throws(
        () => parseOptions(argv, noConf()),
        (e) => e instanceof UsageError && re.test(e.message),
        argv.join(' '),
      );
  });

  test('the long-only flags have no short letter to collide with', () => {
    assert.throws(() => parseOptions(['-'], noConf()), UsageError);
    // An unknown short option still fails as before (the empty short letter matches nothing).
    assert.throws(() => parseOptions(['-x'], noConf()), /invalid option -- 'x'/);
  });

  test('-D prints the keys only when they differ from the defaults', () => {
    assert.doesNotMatch(dumpConfig(parseOptions([], noConf()).config), /fsfreeze-(include|limit|hook-timeout)/);
    const out = dumpConfig(
      parseOptions(['--fsfreeze-include=/a,/b', '--fsfreeze-limit=5', '--fsfreeze-hook-timeout=0'], noConf()).config,
    );
    assert.match(out, /^fsfreeze-include=\/a,\/b$/m);
    assert.match(out, /^fsfreeze-limit=5$/m);
    assert.match(out, /^fsfreeze-hook-timeout=0$/m);
  });
});
