import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SAVE_CODE_CACHE = fileURLToPath(new URL('../../scripts/save-code-cache.mjs', import.meta.url));
const NODE_MODULES = fileURLToPath(new URL('../../node_modules', import.meta.url));

/**
 * A copy of a built command (`cliDir`, e.g. dist/cli) in a new folder under `dir`, its code caches made
 * again under the node flags `flags` (scripts/save-code-cache.mjs): V8 takes a cache only under the
 * flags it was made with, so a run under other flags (--log-function-events) measures a refused cache
 * otherwise. The copy finds the project's packages (quiesce-agent, for a local freeze) as the original
 * does. Returns the copy's bin.js and what saving the caches wrote to stderr; throws if it failed.
 */
export function cliCopyUnderFlags(
  cliDir: string,
  dir: string,
  flags: readonly string[],
): { bin: string; stderr: string } {
  const copy = mkdtempSync(join(dir, 'cli-'));
  cpSync(cliDir, copy, { recursive: true });
  symlinkSync(NODE_MODULES, join(copy, 'node_modules'));
  const save = spawnSync(process.execPath, [...flags, SAVE_CODE_CACHE, copy], { encoding: 'utf8' });
  if (save.status !== 0) throw new Error(`saving the copy's code caches failed (${save.status}): ${save.stderr}`);
  return { bin: join(copy, 'bin.js'), stderr: save.stderr };
}
