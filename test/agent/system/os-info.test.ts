import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKeyFile, replaceSpecial } from '../../../agent/src/system/os-info.js';

const special = (v: string): string => replaceSpecial(Buffer.from(v)).toString();
const keys = (text: string): Record<string, string> | undefined => {
  const m = parseKeyFile(Buffer.from(text));
  return m && Object.fromEntries([...m].map(([k, v]) => [k, v.toString()]));
};

describe('os-release values like the reference reads them', () => {
  test('unquoted values end at the first space, then at the first ";" (single quotes are no quotes)', () => {
    assert.equal(special('Debian'), 'Debian');
    assert.equal(special('two words'), 'two');
    assert.equal(special('a;b c'), 'a');
    assert.equal(special("'single quoted'"), "'single");
    assert.equal(special('tab\tkept'), 'tab\tkept');
  });

  test('double-quoted values lose the quotes and the backslash before $ \' " \\ `', () => {
    assert.equal(special('"Debian GNU/Linux"'), 'Debian GNU/Linux');
    assert.equal(special('"a \\"b\\" \\$c \\\\d \\`e\\` \\q"'), 'a "b" $c \\d `e` \\q');
    assert.equal(special('"x"trailing'), 'x');
    assert.equal(special('""'), '');
  });

  test('an unterminated quote leaves what the in-place copy left', () => {
    assert.equal(special('"abc'), 'abcc');
    assert.equal(special('"'), '"');
    assert.equal(special('"a\\'), 'a\\\\');
  });

  test('GKeyFile: comments, blank lines, indentation, CRLF, spaces around "=", last key wins', () => {
    assert.deepEqual(keys('# c\n\n  ID = x \r\nID=y\nNAME=a b\r'), { ID: 'y', NAME: 'a b\r' });
  });

  test('GKeyFile: other groups and locale keys are kept apart', () => {
    assert.deepEqual(keys('ID=a\n[other]\nID=b\n[os-release]\nNAME[de]=c\n'), { ID: 'a', 'NAME[de]': 'c' });
  });

  test('GKeyFile: a line that is no pair, group or comment spoils the file', () => {
    for (const bad of ['junk', '=x', 'A]B=1', 'A[b=1', '[a[b]', '[g] x', 'Encoding=latin1']) {
      assert.equal(keys(`ID=a\n${bad}\n`), undefined, bad);
    }
    assert.deepEqual(keys('ID=a\nEncoding=UTF-8\n'), { ID: 'a', Encoding: 'UTF-8' });
  });
});
