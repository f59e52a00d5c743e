import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InProcessAgent } from '../../helpers/in-process-agent.js';
import { chunkedStreamArb, SEED_REQUESTS_WITH_INFO } from './generators.js';

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 10_000);
const SEED = process.env['FUZZ_SEED'] === undefined ? undefined : Number(process.env['FUZZ_SEED']);
/** Far from every id in the seed requests, so a mutated request cannot fake the final reply. */
const SYNC_ID = 8_100_000_000_123;
const SYNC = Buffer.concat([
  Buffer.of(0xff),
  Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${SYNC_ID}}}`),
]);
const SYNC_REPLY = `\xff{"return": ${SYNC_ID}}\n`;

describe('session fuzz: random and mutated byte streams into an in-process agent', () => {
  let agent: InProcessAgent;
  before(async () => {
    agent = await InProcessAgent.create();
  });
  after(async () => {
    await agent?.close();
  });

  test(
    `${RUNS} streams: never throws, every reply is one line, and 0xFF + guest-sync-delimited always resynchronises`,
    {
      timeout: 120_000,
    },
    async () => {
      await fc.assert(
        fc.asyncProperty(chunkedStreamArb(SEED_REQUESTS_WITH_INFO), async (chunks) => {
          const out = await agent.run(...chunks, SYNC);
          assert.ok(out.endsWith(SYNC_REPLY), `no sync reply at the end: ${JSON.stringify(out.slice(-200))}`);
          // The sync reply is the only 0xFF-prefixed line with our id, and it is last.
          assert.equal(out.indexOf(SYNC_REPLY), out.length - SYNC_REPLY.length);
          const lines = out.slice(0, -1).split('\n');
          for (const line of lines) {
            assert.match(line, /^\xff?\{"(return|error|id)": .*\}$/s, `not a reply line: ${JSON.stringify(line)}`);
          }
          // The 0xFF before the sync always ends in a "stray" error (alone, or closing an unfinished token), right before the sync reply.
          assert.match(
            lines.at(-2) ?? '',
            /^\{"error": \{"class": "GenericError", "desc": "JSON parse error, stray '.*\\uFFFD'"\}\}$/s,
          );
        }),
        { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
      );
    },
  );

  test('one long-lived session survives 2000 streams in a row and still answers', { timeout: 60_000 }, async () => {
    const { session, peer } = agent.session();
    const streams = fc.sample(chunkedStreamArb(SEED_REQUESTS_WITH_INFO), { numRuns: 2000, seed: 20250101 });
    for (const chunks of streams) for (const c of chunks) session.feed(c);
    session.feed(SYNC);
    await session.idle();
    assert.ok(peer.take().toString('latin1').endsWith(SYNC_REPLY));
  });
});
