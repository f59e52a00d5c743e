// The minimal client the frozen-window benchmark compares quiesce with: connect,
// freeze-list one mountpoint, run `true`, thaw; prints the window (freeze sent → thaw reply) in ms.
import { connect } from 'node:net';
import { spawn } from 'node:child_process';

const [socket, mnt] = process.argv.slice(2);
const s = connect(socket);
await new Promise((r) => s.once('connect', r));
s.setNoDelay(true);
let buf = '';
let wake;
s.on('data', (d) => {
  buf += d.toString('latin1');
  wake?.();
});
async function reply() {
  while (!buf.includes('\n')) await new Promise((r) => (wake = r));
  const line = buf.slice(0, buf.indexOf('\n'));
  buf = buf.slice(buf.indexOf('\n') + 1);
  return line;
}
const t0 = performance.now();
s.write(JSON.stringify({ execute: 'guest-fsfreeze-freeze-list', arguments: { mountpoints: [mnt] } }));
const frozen = await reply();
const tFrozen = performance.now();
await new Promise((r) => spawn('true', [], { stdio: 'ignore' }).once('exit', r));
s.write('{"execute":"guest-fsfreeze-thaw"}');
const thawed = await reply();
const window = performance.now() - t0;
const afterFreeze = performance.now() - tFrozen;
s.destroy();
if (frozen !== '{"return": 1}' || thawed !== '{"return": 1}') {
  console.error(`unexpected replies: ${frozen} ${thawed}`);
  process.exit(1);
}
// The window, and its part after the freeze reply (what the host controls).
console.log(`${window.toFixed(3)} ${afterFreeze.toFixed(3)}`);
