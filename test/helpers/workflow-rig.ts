// Shared set-up of the root-free workflow tests (test/host/workflow/*): a private scratch and lock
// directory, and configs that resolve like a user's but with short timeouts.
import { after, before } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config/load.js';
import type { ResolvedConfig } from '../../src/config/types.js';
import { forgetLockSecrets } from '../../src/guest/lock.js';
import type { Step } from './scripted-agent.js';
import { infoReply } from './recording-agent.js';

/**
 * A temporary directory for this test file, and QUIESCE_RUN_DIR inside it:
 * the file's locks are never shared with a real run (or another test file),
 * and they work as an ordinary user. Registers before/after hooks; call at
 * the top level of a test file.
 */
export function scratchDir(prefix: string): { readonly root: string; path(...parts: string[]): string } {
  let root = '';
  const saved = process.env['QUIESCE_RUN_DIR'];
  before(() => {
    root = mkdtempSync(join(tmpdir(), `${prefix}-`));
    process.env['QUIESCE_RUN_DIR'] = join(root, 'run');
    forgetLockSecrets();
  });
  after(() => {
    if (saved === undefined) delete process.env['QUIESCE_RUN_DIR'];
    else process.env['QUIESCE_RUN_DIR'] = saved;
    forgetLockSecrets();
    rmSync(root, { recursive: true, force: true });
  });
  return {
    get root() {
      return root;
    },
    path: (...parts) => join(root, ...parts),
  };
}

let configs = 0;

/**
 * A resolved config whose guests reach sockets that do not exist (tests
 * inject agents), with short agent timeouts; `guests` override per guest.
 * Every call gets distinct socket paths, so two configs never share a lock.
 */
export function testConfig(
  o: {
    guests: Record<string, Record<string, unknown>>;
    jobs: Record<string, Record<string, unknown>>;
    stateDir: string;
    defaults?: Record<string, unknown>;
  },
  source = 'test',
): ResolvedConfig {
  const n = ++configs;
  const guests = Object.fromEntries(
    Object.entries(o.guests).map(([name, g]) => [
      name,
      {
        connector: { type: 'socket', path: `/nonexistent/${process.pid}-${n}-${name}.sock` },
        freeze: ['/a', '/b'],
        snapshot: { provider: 'command', argv: ['true'] },
        timeouts: { connect: '300ms', freeze: '1s', thaw: '200ms', command: '200ms' },
        ...g,
      },
    ]),
  );
  return resolveConfig(
    { stateDir: o.stateDir, guests, jobs: o.jobs, ...(o.defaults ? { defaults: o.defaults } : {}) },
    source,
  );
}

export const FREEZE_LIST_COMMANDS = ['guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status'];

/** A guest that connects, passes preflight (freeze list of 2), freezes 2 and thaws 2; `over` replaces commands. */
export function healthyScript(over: Record<string, Step[]> = {}): Record<string, Step[]> {
  return {
    'guest-info': [infoReply(FREEZE_LIST_COMMANDS)],
    'guest-fsfreeze-status': [{ reply: 'thawed' }],
    'guest-fsfreeze-freeze-list': [{ reply: 2 }],
    'guest-fsfreeze-thaw': [{ reply: 2 }],
    ...over,
  };
}
