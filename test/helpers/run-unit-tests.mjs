// `npm run test:unit`: the host and agent unit tests, the ones that need no root, no loop mount, no
// QEMU, no libvirtd, no reference agent and no build (agent bundle or addon). They run as an
// ordinary user in a few minutes at most; a test in them that does need root skips and says why.
// Unlike scripts/run-tests.mjs this starts no libvirtd, so it stops none either (that script stops
// the daemons recorded in a host-wide file, which may belong to another run going on meanwhile).
// Extra arguments narrow the run further to paths containing one of them.
import { findTestFiles, runTestFiles } from '../../scripts/test-files.mjs';

/** Path prefixes of the unit tests. Left out, and why (they run in `npm test`): */
// test/agent/commands/* but system.test.ts: real agents, qemu-ga differentials, loop mounts, namespaces
// test/agent/config/cli.test.ts, test/agent/transport/*: the built agent bundle or addon, qemu-ga
// test/agent/freeze/backend.test.ts: the bundle's addon on a loop mount (root)
// test/agent/differential/, test/agent/fuzz/differential-fuzz.test.ts: qemu-ga side by side
// test/host/cli/* but progress.test.ts: the built CLI, qemu-ga, loop mounts (root), QEMU
// test/host/guest/{libvirt,local,stream-client}.test.ts, test/host/libvirt/{guest,libvirtd}.test.ts:
//   libvirtd and a VM, the agent bundle, real agents
// test/host/snapshot/qmp-provider.test.ts, qmp-chain.test.ts: a real QEMU (its scripted-QMP half is unit-sized)
// test/host/repository/restore.test.ts, test/host/cli/backups.test.ts: real qemu-img/qemu-io chains
// test/host/workflow/engine-faults.test.ts: real agents on loop mounts (root)
// test/host/verify/fsck.test.ts: real qemu-img/qemu-io chains, e2fsck
export const UNIT_TESTS = [
  'test/agent/agent.test.ts',
  'test/agent/commands/system.test.ts',
  'test/agent/config/options.test.ts',
  'test/agent/file/',
  'test/agent/freeze/controller.test.ts',
  'test/agent/freeze/frozen-start.test.ts',
  'test/agent/freeze/fsinfo.test.ts',
  'test/agent/freeze/hooks.test.ts',
  'test/agent/freeze/mounts.test.ts',
  'test/agent/freeze/options.test.ts',
  'test/agent/freeze/watchdog.test.ts',
  'test/agent/fuzz/session-fuzz.test.ts',
  'test/agent/log.test.ts',
  'test/agent/network/',
  'test/agent/power/',
  'test/agent/protocol/',
  'test/agent/qapi/',
  'test/agent/serial-queue.test.ts',
  'test/agent/session.test.ts',
  'test/agent/system/',
  'test/host/cli/progress.test.ts',
  'test/host/config/',
  'test/host/guest/capabilities.test.ts',
  'test/host/guest/lock.test.ts',
  'test/host/layers.test.ts',
  'test/host/libvirt/client.test.ts',
  'test/host/libvirt/packet.test.ts',
  'test/host/libvirt/remote.test.ts',
  'test/host/libvirt/xdr.test.ts',
  'test/host/log/',
  'test/host/process/',
  'test/host/qmp/',
  'test/host/report/',
  'test/host/repository/level.test.ts',
  'test/host/repository/lock.test.ts',
  'test/host/repository/prune.test.ts',
  'test/host/repository/retention.test.ts',
  'test/host/snapshot/libvirt/',
  'test/host/snapshot/qmp/',
  'test/host/verify/checks.test.ts',
  'test/host/verify/config.test.ts',
  'test/host/workflow/emergency.test.ts',
  'test/host/workflow/executor.test.ts',
  'test/host/workflow/exit-code.test.ts',
  'test/host/workflow/freeze-guard.test.ts',
  'test/host/workflow/guest-run.test.ts',
  'test/host/workflow/journal.test.ts',
  'test/host/workflow/plan.test.ts',
  'test/host/workflow/preflight.test.ts',
  'test/host/workflow/prune.test.ts',
  'test/host/workflow/recover.test.ts',
  'test/host/workflow/signals.test.ts',
  'test/host/workflow/thaw.test.ts',
  'test/scripts/',
];

const filters = process.argv.slice(2);
const files = findTestFiles('test')
  .filter((f) => UNIT_TESTS.some((p) => f.startsWith(p)))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
const unmatched = UNIT_TESTS.filter((p) => !files.some((f) => f.startsWith(p)) && filters.length === 0);
if (unmatched.length) {
  // A listed test that is gone would otherwise vanish from the run without a word.
  console.error(`unit tests listed but not found: ${unmatched.join(', ')}`);
  process.exit(1);
}
if (files.length === 0) {
  console.error('no unit test files match');
  process.exit(1);
}
process.exit(await runTestFiles(files));
