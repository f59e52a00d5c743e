import { test } from 'node:test';
import assert from 'node:assert/strict';
import { captureLogger } from '../../../src/log/logger.js';
import { thawAndProve } from '../../../src/workflow/thaw.js';
import { ScriptedAgent, type Step } from '../../helpers/scripted-agent.js';

const base = { guest: 'g', thawTimeoutMs: 200 };

async function thaw(script: Record<string, Step[]>, o: { frozen?: number; zeroIsThawed?: boolean } = {}) {
  const agent = new ScriptedAgent(script);
  const log = captureLogger();
  const outcome = await thawAndProve(agent, { ...base, log, ...o });
  return { outcome, agent, events: log.events };
}

test('a thaw that answers the frozen count with status thawed is proven', async () => {
  const { outcome, agent } = await thaw(
    { 'guest-fsfreeze-thaw': [{ reply: 2 }], 'guest-fsfreeze-status': [{ reply: 'thawed' }] },
    { frozen: 2 },
  );
  assert.equal(outcome.proven, true);
  assert.equal(outcome.thawed, 2);
  assert.ok(outcome.thawedAt !== undefined && outcome.thawMs !== undefined);
  assert.deepEqual(agent.calls, ['guest-fsfreeze-thaw', 'guest-fsfreeze-status']);
});

test('fewer filesystems thawed than frozen is not proven, and says why', async () => {
  const { outcome, events } = await thaw(
    { 'guest-fsfreeze-thaw': [{ reply: 1 }], 'guest-fsfreeze-status': [{ reply: 'thawed' }] },
    { frozen: 2 },
  );
  assert.equal(outcome.proven, false);
  assert.equal(outcome.error?.code, 'THAW_UNPROVEN');
  assert.match(outcome.error!.message, /thawed 1 filesystem\(s\) but 2 were frozen/);
  assert.ok(events.some((e) => e.kind === 'thaw-failed'));
});

test('more filesystems thawed than frozen is proven with a warning (another tool froze one too)', async () => {
  const { outcome, events } = await thaw(
    { 'guest-fsfreeze-thaw': [{ reply: 2 }], 'guest-fsfreeze-status': [{ reply: 'thawed' }] },
    { frozen: 1 },
  );
  assert.equal(outcome.proven, true);
  assert.ok(events.some((e) => e.kind === 'warning' && /more than the 1 frozen/.test(e.message)));
});

test('status still frozen after the thaw is not proven', async () => {
  const { outcome } = await thaw({
    'guest-fsfreeze-thaw': [{ reply: 1 }],
    'guest-fsfreeze-status': [{ reply: 'frozen' }],
  });
  assert.equal(outcome.proven, false);
  assert.match(outcome.error!.message, /status is frozen after the thaw/);
});

test('a failed thaw is retried; attempts add up, and the counts still decide', async () => {
  const { outcome, agent, events } = await thaw(
    {
      'guest-fsfreeze-thaw': [{ error: 'transient' }, { reply: 1 }],
      'guest-fsfreeze-status': [{ reply: 'thawed' }],
    },
    { frozen: 1 },
  );
  assert.equal(outcome.proven, true);
  assert.equal(agent.calls.filter((c) => c === 'guest-fsfreeze-thaw').length, 2);
  assert.ok(events.some((e) => e.kind === 'thaw-retry'));
});

test('after a lost reply the counts cannot be compared: status alone proves it', async () => {
  const { outcome } = await thaw(
    {
      'guest-fsfreeze-thaw': [{ lost: true }, { reply: 0 }],
      'guest-fsfreeze-status': [{ reply: 'thawed' }],
    },
    { frozen: 1 },
  );
  assert.equal(outcome.proven, true);
});

test('a guest that never answers the thaw ends in a clear failure at the deadline, not a hang', async () => {
  const t0 = Date.now();
  const { outcome } = await thaw({ 'guest-fsfreeze-thaw': [{ hang: true }] }, { frozen: 1 });
  assert.equal(outcome.proven, false);
  assert.equal(outcome.thawed, undefined);
  // Retries stop at 3x the thaw timeout (+ the attempt in flight and backoff).
  assert.ok(Date.now() - t0 < 200 * 3 + 200 + 2500, `${Date.now() - t0} ms`);
});

test('a reply that is not a count is not a thaw', async () => {
  const { outcome } = await thaw({
    'guest-fsfreeze-thaw': [{ reply: 'yes' }],
    'guest-fsfreeze-status': [{ reply: 'thawed' }],
  });
  assert.equal(outcome.proven, false);
  assert.match(outcome.error!.message, /not a count/);
});

test('recovery: 0 thawed with status thawed is proof (the dead owner thawed first); a partial count is not', async () => {
  const ok = await thaw(
    { 'guest-fsfreeze-thaw': [{ reply: 0 }], 'guest-fsfreeze-status': [{ reply: 'thawed' }] },
    { frozen: 2, zeroIsThawed: true },
  );
  assert.equal(ok.outcome.proven, true);
  const partial = await thaw(
    { 'guest-fsfreeze-thaw': [{ reply: 1 }], 'guest-fsfreeze-status': [{ reply: 'thawed' }] },
    { frozen: 2, zeroIsThawed: true },
  );
  assert.equal(partial.outcome.proven, false);
  const run = await thaw(
    { 'guest-fsfreeze-thaw': [{ reply: 0 }], 'guest-fsfreeze-status': [{ reply: 'thawed' }] },
    { frozen: 2 },
  );
  assert.equal(run.outcome.proven, false, 'a run froze it itself: 0 of 2 is not its thaw');
});
