import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionEnd } from '../../src/connection.js';
import { QuiesceError } from '../../src/errors.js';

const gone = (why: string) => new QuiesceError('CHANNEL_GONE', why);

test('the first end wins and is told once to each listener, in the order they came', () => {
  const end = new ConnectionEnd();
  const heard: string[] = [];
  end.listen((e) => heard.push(`a:${e.message}`));
  end.listen((e) => heard.push(`b:${e.message}`));
  assert.equal(end.reason === undefined, true, 'open until the first end');
  assert.equal(end.end(gone('first')), true);
  assert.equal(end.end(gone('second')), false);
  assert.deepEqual(heard, ['a:first', 'b:first']);
  assert.equal(end.reason?.message, 'first');
});

test('a listener added after the end is called at once; one removed before it never is', () => {
  const end = new ConnectionEnd();
  const heard: string[] = [];
  const off = end.listen(() => heard.push('removed by its unsubscribe'));
  const waiter = (): number => heard.push('removed by unlisten');
  end.listen(waiter);
  off();
  end.unlisten(waiter);
  end.end(gone('closed'));
  assert.equal(heard.length, 0);
  end.listen((e) => heard.push(`late:${e.message}`));
  assert.deepEqual(heard, ['late:closed']);
});
