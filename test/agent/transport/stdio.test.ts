import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnAgentBundle, tempDir, type Proc } from './processes.js';

describe('stdio', () => {
  const procs: Proc[] = [];
  const dirs: { remove(): void }[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    for (const d of dirs) d.remove();
  });
  const agent = (): Proc => {
    const dir = tempDir('quiesce-stdio-');
    dirs.push(dir);
    const p = spawnAgentBundle(['-m', 'stdio', '-t', dir.path]);
    procs.push(p);
    return p;
  };

  test('answers requests from stdin on stdout and exits 0 at end of input', { timeout: 10_000 }, async () => {
    const p = agent();
    p.child.stdin!.write('{"execute":"guest-ping","id":1}\n{"execute":"guest-sync-del');
    await new Promise((r) => setTimeout(r, 100));
    p.child.stdin!.end('imited","arguments":{"id":9}}garbage}');
    assert.equal(await p.exited, 0);
    assert.equal(
      p.stdout().toString('latin1'),
      '{"return": {}, "id": 1}\n' +
        '\xff{"return": 9}\n' +
        `{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}\n` +
        '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}\n',
    );
  });

  test(
    'exits 0 at end of input in the middle of a request, having answered the complete ones',
    { timeout: 10_000 },
    async () => {
      const p = agent();
      p.child.stdin!.end('{"execute":"guest-ping"}{"execute":"guest-pi');
      assert.equal(await p.exited, 0);
      assert.equal(p.stdout().toString(), '{"return": {}}\n');
    },
  );

  test('exits 0 on an empty input', { timeout: 10_000 }, async () => {
    const p = agent();
    p.child.stdin!.end();
    assert.equal(await p.exited, 0);
    assert.equal(p.stdout().length, 0);
  });

  test('answers many requests piped at once, all of them, in order', { timeout: 20_000 }, async () => {
    const p = agent();
    const n = 5000;
    let input = '';
    for (let i = 0; i < n; i++) input += `{"execute":"guest-sync","arguments":{"id":${i}}}`;
    p.child.stdin!.end(input);
    assert.equal(await p.exited, 0);
    const lines = p.stdout().toString().trimEnd().split('\n');
    assert.equal(lines.length, n);
    assert.ok(lines.every((l, i) => l === `{"return": ${i}}`));
  });
});
