import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { guestAgent } from '../../../src/guest/connect.js';
import { agentBundlePath } from '../../../src/guest/connectors/local.js';
import { parseCapabilities } from '../../../src/guest/capabilities.js';

test('the local connector finds the installed agent bundle', () => {
  assert.ok(existsSync(agentBundlePath()), agentBundlePath());
});

test('the local connector spawns quiesce-agent over stdio and talks to it', async () => {
  const agent = await guestAgent({ kind: 'local' });
  try {
    assert.deepEqual(await agent.execute('guest-ping'), {});
    const caps = parseCapabilities(await agent.execute('guest-info'));
    assert.ok(caps.commands.has('guest-sync-delimited'));
    assert.equal(await agent.execute('guest-sync', { id: 12345 }), 12345);
  } finally {
    await agent.close();
  }
});
