// Runs benchmarks: every bench/*.ts, or those whose path contains one of the arguments, one after another (through tsx).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const filters = process.argv.slice(2);
const files = readdirSync('bench', { withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith('.ts'))
  .map((e) => join('bench', e.name))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no benchmark matches');
  process.exit(1);
}
let failed = 0;
for (const f of files) {
  console.log(`\n== ${f}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', f], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${f} failed (status ${r.status ?? r.signal})`);
    failed++;
  }
}
process.exit(failed === 0 ? 0 : 1);
