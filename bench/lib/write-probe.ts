// The guest-side write probe of the libvirt benchmarks: node in the guest writes 4 KiB and fdatasyncs
// every 5 ms, and prints each write that took PROBE_MS or longer on the console; a run's "writes
// blocked" is its longest.

/** Writes at least this slow (ms) are reported. */
export const PROBE_MS = 10;

/** One reported write on the console: sequence number, milliseconds. */
export const PROBE_LINE = /QUIESCE-PROBE: (\d+) ([\d.]+)/g;

/** The console line the probe prints once it runs. */
export const PROBE_STARTED = /QUIESCE-PROBE: started/;

/** The probe, for `node -e` in the guest (writes /data/probe). */
export const PROBE = `
const fs = require('fs');
const con = fs.openSync('/dev/console', 'w');
const fd = fs.openSync('/data/probe', 'w');
const buf = Buffer.alloc(4096, 0x71);
let seq = 0;
fs.writeSync(con, 'QUIESCE-PROBE: started\\n');
function loop() {
  const t0 = process.hrtime.bigint();
  fs.writeSync(fd, buf, 0, buf.length, (seq % 256) * 4096);
  fs.fdatasyncSync(fd);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  seq++;
  if (ms >= ${PROBE_MS}) fs.writeSync(con, 'QUIESCE-PROBE: ' + seq + ' ' + ms.toFixed(1) + '\\n');
  setTimeout(loop, 5);
}
loop();
`;
