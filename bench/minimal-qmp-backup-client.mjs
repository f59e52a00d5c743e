// The minimal client the end-to-end window benchmark compares `quiesce run` with: one guest-agent
// socket and one QMP socket, no error handling beyond exiting. Before the freeze: QMP greeting +
// qmp_capabilities, the raw target file created and added as nodes (file + raw), a guest-sync (a
// fresh agent connection's first request waits for the agent to notice the host: both agents poll a
// disconnected virtio-serial port every 100 ms; quiesce run handshakes first too). In the window:
// freeze-list MNT, blockdev-backup (sync full), thaw. After: wait for BLOCK_JOB_COMPLETED, dismiss, delete the nodes.
// Prints: window (freeze sent → thaw reply), after-freeze (freeze reply → thaw reply), freeze, backup, thaw, in ms.
// Usage: node minimal-qmp-backup-client.mjs AGENT_SOCKET QMP_SOCKET MOUNTPOINT NODE SIZE TARGET
import { connect } from 'node:net';
import { closeSync, ftruncateSync, openSync } from 'node:fs';

const [agentPath, qmpPath, mnt, node, size, target] = process.argv.slice(2);

function lines(socket, onLine) {
  let buf = '';
  socket.on('data', (d) => {
    buf += d.toString('latin1');
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onLine(JSON.parse(line));
    }
  });
}

async function open(path) {
  const s = connect(path);
  await new Promise((r) => s.once('connect', r));
  s.setNoDelay(true);
  return s;
}

// Agent: one request at a time, replies in order.
const agent = await open(agentPath);
const agentWaiters = [];
lines(agent, (m) => agentWaiters.shift()(m));
const ga = (execute, args) =>
  new Promise((resolve) => {
    agentWaiters.push(resolve);
    agent.write(JSON.stringify(args ? { execute, arguments: args } : { execute }));
  });

// QMP: replies by id, events kept.
const qmp = await open(qmpPath);
const pending = new Map();
const events = [];
let onEvent = () => undefined;
let greeted;
const greeting = new Promise((r) => (greeted = r));
let nextId = 1;
lines(qmp, (m) => {
  if (m.QMP) return greeted();
  if (m.event) {
    events.push(m);
    return onEvent();
  }
  pending.get(m.id)?.(m);
  pending.delete(m.id);
});
const q = (execute, args) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, (m) => (m.error ? reject(new Error(`${execute}: ${m.error.desc}`)) : resolve(m.return)));
    qmp.write(`${JSON.stringify(args ? { execute, arguments: args, id } : { execute, id })}\n`);
  });

await greeting;
await q('qmp_capabilities');
const fd = openSync(target, 'wx', 0o600);
ftruncateSync(fd, Number(size));
closeSync(fd);
await q('blockdev-add', { driver: 'file', 'node-name': 'mfile', filename: target });
await q('blockdev-add', { driver: 'raw', 'node-name': 'mraw', file: 'mfile' });

const id = Math.floor(Math.random() * 2 ** 31);
if ((await ga('guest-sync', { id })).return !== id) throw new Error('guest-sync: wrong id');

const t0 = performance.now();
const frozen = await ga('guest-fsfreeze-freeze-list', { mountpoints: [mnt] });
const tFrozen = performance.now();
await q('blockdev-backup', { 'job-id': 'mjob', device: node, target: 'mraw', sync: 'full', 'auto-dismiss': false });
const tBackup = performance.now();
const thawed = await ga('guest-fsfreeze-thaw');
const tThawed = performance.now();

if (frozen.return !== 1 || thawed.return !== 1) {
  console.error(`unexpected replies: ${JSON.stringify(frozen)} ${JSON.stringify(thawed)}`);
  process.exit(1);
}
const done = () => events.some((e) => e.event === 'BLOCK_JOB_COMPLETED' && e.data.device === 'mjob');
while (!done()) await new Promise((r) => (onEvent = r));
await q('job-dismiss', { id: 'mjob' });
await q('blockdev-del', { 'node-name': 'mraw' });
await q('blockdev-del', { 'node-name': 'mfile' });
agent.destroy();
qmp.destroy();
const f = (x) => x.toFixed(3);
console.log([tThawed - t0, tThawed - tFrozen, tFrozen - t0, tBackup - tFrozen, tThawed - tBackup].map(f).join(' '));
