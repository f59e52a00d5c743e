import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  hasWatchdog,
  isEnabled,
  parseCapabilities,
  WATCHDOG_GET_RECORD,
  WATCHDOG_SET_LIMIT,
} from '../../../src/guest/capabilities.js';

const info = (cmds: [string, boolean][]) => ({
  version: '7.2.22',
  supported_commands: cmds.map(([name, enabled]) => ({ name, enabled, 'success-response': true })),
});

test('reads enabled commands from guest-info', () => {
  const caps = parseCapabilities(
    info([
      ['guest-ping', true],
      ['guest-file-open', false],
    ]),
  );
  assert.equal(caps.version, '7.2.22');
  assert.ok(isEnabled(caps, 'guest-ping'));
  assert.ok(!isEnabled(caps, 'guest-file-open'));
  assert.ok(!isEnabled(caps, 'guest-nope'));
});

test('sees the freeze watchdog only when both extension commands are there', () => {
  assert.ok(!hasWatchdog(parseCapabilities(info([['guest-ping', true]]))));
  assert.ok(!hasWatchdog(parseCapabilities(info([[WATCHDOG_SET_LIMIT, true]]))));
  assert.ok(
    hasWatchdog(
      parseCapabilities(
        info([
          [WATCHDOG_SET_LIMIT, true],
          [WATCHDOG_GET_RECORD, true],
        ]),
      ),
    ),
  );
});

test('rejects a guest-info reply without its members', () => {
  assert.throws(() => parseCapabilities({ version: 1 }), /lacks version/);
  assert.throws(() => parseCapabilities(null), /lacks version/);
});
