import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonStreamer, type Message } from '../../../agent/src/protocol/index.js';

test('parses a request split across two reads', () => {
  const out: Message[] = [];
  const s = new JsonStreamer((m) => out.push(m));
  s.feed(Buffer.from('{"execute":"guest-'));
  assert.equal(out.length, 0);
  s.feed(Buffer.from('ping"}'));
  assert.equal(out.length, 1);
  assert.ok(out[0]!.ok);
});
