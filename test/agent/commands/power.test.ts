/**
 * guest-shutdown and guest-suspend-* run for real, on both agents, with every
 * program they could execute replaced by a recording stub inside a private
 * mount namespace (see power-rig.ts): the exact argv, session and stdio of
 * what runs, the reply or its absence, and a live channel afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { haveQemuGa, type AgentKind } from '../../helpers/agents.js';
import { PowerRig, powerSkipReason, type Outcome, type StubConfig } from './power-rig.js';

const SKIP = powerSkipReason();
const KINDS: AgentKind[] = haveQemuGa() ? ['quiesce', 'qemu-ga'] : ['quiesce'];
const err = (desc: string): string => `{"error": {"class": "GenericError", "desc": ${JSON.stringify(desc)}}}`;

/** A program run as the reference runs /sbin/shutdown: its own session, stdio on /dev/null, environment kept. */
const shutdownCall = (flag: string) => ({
  argv: ['/sbin/shutdown', '-h', flag, '+0', 'hypervisor initiated shutdown'],
  session: 'own',
  io: 'nnn',
  env: 'inherited',
});
/** A helper as g_spawn_sync() runs it: found in PATH, same session, stdio on /dev/null, environment kept. */
const helperCall = (...argv: string[]) => ({
  argv: [`$DIR/bin/${argv[0]}`, ...argv.slice(1)],
  session: 'inherited',
  io: 'nnn',
  env: 'inherited',
});

interface Scenario {
  readonly name: string;
  readonly config: StubConfig;
  readonly execute: string;
  readonly args?: unknown;
  /** What both agents do, unless `reference` says otherwise for qemu-ga. */
  readonly expect: Partial<Outcome>;
  /** A deliberate difference: what qemu-ga does instead. */
  readonly reference?: Partial<Outcome>;
}

const ALL_STATES = 'freeze mem disk\n';

const scenarios: Scenario[] = [
  ...[
    [undefined, '-P'],
    ['powerdown', '-P'],
    ['halt', '-H'],
    ['reboot', '-r'],
  ].map(([mode, flag]): Scenario => ({
    name: `guest-shutdown ${mode ?? '(no mode)'} runs shutdown ${flag} and sends no reply`,
    config: {},
    execute: 'guest-shutdown',
    args: mode === undefined ? undefined : { mode },
    expect: { replies: [], calls: [shutdownCall(flag!)] },
  })),
  {
    name: 'guest-shutdown with a bad mode runs nothing (the text lacks its closing parenthesis, as the reference)',
    config: {},
    execute: 'guest-shutdown',
    args: { mode: 'toString' },
    expect: { replies: [err('mode is invalid (valid values are: halt|powerdown|reboot')], calls: [] },
  },
  {
    name: 'guest-shutdown when shutdown exits 3',
    config: { SHUTDOWN_EXIT: 3 },
    execute: 'guest-shutdown',
    args: { mode: 'reboot' },
    expect: { replies: [err('child process has failed to shutdown')], calls: [shutdownCall('-r')] },
  },
  {
    name: 'guest-shutdown when shutdown is killed by a signal',
    config: { SHUTDOWN_SIGNAL: 'KILL' },
    execute: 'guest-shutdown',
    expect: { replies: [err('child process has terminated abnormally')], calls: [shutdownCall('-P')] },
  },
  ...(
    [
      ['disk', 'systemd-hibernate', 'hibernate'],
      ['ram', 'systemd-suspend', 'suspend'],
      ['hybrid', 'systemd-hybrid-sleep', 'hybrid-sleep'],
    ] as const
  ).map(([mode, unit, verb]): Scenario => ({
    name: `guest-suspend-${mode} through systemd when systemctl status ${unit} exits 3 (known, not running)`,
    config: { SYSTEMCTL_STATUS: 3, powerState: ALL_STATES },
    execute: `guest-suspend-${mode}`,
    expect: { replies: [], calls: [helperCall('systemctl', 'status', unit), helperCall('systemctl', verb)] },
  })),
  ...(
    [
      ['disk', 'systemd-hibernate', '--hibernate', 'pm-hibernate'],
      ['ram', 'systemd-suspend', '--suspend', 'pm-suspend'],
      ['hybrid', 'systemd-hybrid-sleep', '--suspend-hybrid', 'pm-suspend-hybrid'],
    ] as const
  ).map(([mode, unit, arg, program]): Scenario => ({
    name: `guest-suspend-${mode} through pm-utils when systemd does not know ${unit} (status 4)`,
    config: { SYSTEMCTL_STATUS: 4, PM_IS_SUPPORTED: 0, powerState: ALL_STATES },
    execute: `guest-suspend-${mode}`,
    expect: {
      replies: [],
      calls: [helperCall('systemctl', 'status', unit), helperCall('pm-is-supported', arg), helperCall(program)],
    },
  })),
  {
    name: 'guest-suspend-ram through pm-utils when there is no systemctl at all (no early return)',
    config: { present: ['pm-is-supported', 'pm-suspend'], PM_IS_SUPPORTED: 0, powerState: ALL_STATES },
    execute: 'guest-suspend-ram',
    expect: { replies: [], calls: [helperCall('pm-is-supported', '--suspend'), helperCall('pm-suspend')] },
  },
  ...(
    [
      ['ram', 'mem', 'memeze mem disk\n'],
      ['disk', 'disk', 'diskze mem disk\n'],
    ] as const
  ).map(([mode, , after]): Scenario => ({
    name: `guest-suspend-${mode} through /sys/power/state when neither systemd nor pm-utils support it`,
    config: { SYSTEMCTL_STATUS: 4, PM_IS_SUPPORTED: 1, powerState: ALL_STATES },
    execute: `guest-suspend-${mode}`,
    // The word is written over the start of the file, without truncating it.
    expect: { replies: [], powerState: after },
  })),
  {
    name: 'guest-suspend-hybrid has no sysfs path: not supported',
    config: { SYSTEMCTL_STATUS: 4, PM_IS_SUPPORTED: 1, powerState: ALL_STATES },
    execute: 'guest-suspend-hybrid',
    expect: {
      replies: [err('the requested suspend mode is not supported by the guest')],
      calls: [
        helperCall('systemctl', 'status', 'systemd-hybrid-sleep'),
        helperCall('pm-is-supported', '--suspend-hybrid'),
      ],
      powerState: ALL_STATES,
    },
  },
  {
    name: 'guest-suspend-disk not supported anywhere (sysfs lists only freeze)',
    config: { present: [], powerState: 'freeze\n' },
    execute: 'guest-suspend-disk',
    expect: {
      replies: [err('the requested suspend mode is not supported by the guest')],
      calls: [],
      powerState: 'freeze\n',
    },
  },
  {
    name: 'a failing systemctl suspend falls through to the next supported method',
    config: { SYSTEMCTL_STATUS: 3, SYSTEMCTL_EXIT: 1, PM_IS_SUPPORTED: 1, powerState: ALL_STATES },
    execute: 'guest-suspend-ram',
    expect: {
      replies: [],
      calls: [
        helperCall('systemctl', 'status', 'systemd-suspend'),
        helperCall('systemctl', 'suspend'),
        helperCall('pm-is-supported', '--suspend'),
      ],
      powerState: 'memeze mem disk\n',
    },
  },
  {
    name: 'deliberate: a failing systemctl suspend with nothing after it is reported (the reference answers nothing)',
    config: { SYSTEMCTL_STATUS: 3, SYSTEMCTL_EXIT: 1, PM_IS_SUPPORTED: 1, powerState: 'freeze\n' },
    execute: 'guest-suspend-ram',
    expect: {
      replies: [err("the helper program 'systemctl suspend' returned an unexpected exit status code (1)")],
      calls: [
        helperCall('systemctl', 'status', 'systemd-suspend'),
        helperCall('systemctl', 'suspend'),
        helperCall('pm-is-supported', '--suspend'),
      ],
    },
    reference: { replies: [] },
  },
  {
    name: 'deliberate: a failing pm-hibernate with nothing after it is reported (the reference answers nothing)',
    config: { present: ['pm-is-supported', 'pm-hibernate'], PM_IS_SUPPORTED: 0, PM_EXIT: 2, powerState: 'mem\n' },
    execute: 'guest-suspend-disk',
    expect: {
      replies: [err("the helper program 'pm-hibernate' returned an unexpected exit status code (2)")],
      calls: [helperCall('pm-is-supported', '--hibernate'), helperCall('pm-hibernate')],
    },
    reference: { replies: [] },
  },
  {
    name: 'deliberate: a killed systemctl suspend is a failure, not a success (GLib reports it as exit status 0)',
    config: { SYSTEMCTL_STATUS: 3, SYSTEMCTL_SIGNAL: 'KILL', PM_IS_SUPPORTED: 1, powerState: 'freeze\n' },
    execute: 'guest-suspend-ram',
    expect: {
      replies: [err('child process has terminated abnormally (systemctl suspend, SIGKILL)')],
      calls: [
        helperCall('systemctl', 'status', 'systemd-suspend'),
        helperCall('systemctl', 'suspend'),
        helperCall('pm-is-supported', '--suspend'),
      ],
    },
    reference: {
      replies: [],
      calls: [helperCall('systemctl', 'status', 'systemd-suspend'), helperCall('systemctl', 'suspend')],
    },
  },
];

describe('power commands in a mount namespace with stubs', { skip: SKIP }, () => {
  const rigs = new Map<AgentKind, PowerRig>();

  before(async () => {
    for (const kind of KINDS) rigs.set(kind, await PowerRig.start(kind));
  });
  after(async () => {
    for (const rig of rigs.values()) await rig.stop();
  });

  for (const s of scenarios) {
    test(s.name, async () => {
      for (const kind of KINDS) {
        const rig = rigs.get(kind)!;
        rig.configure(s.config);
        const got = await rig.send(s.execute, s.args);
        const want = { ...s.expect, ...(kind === 'qemu-ga' ? s.reference : {}) };
        if (want.replies) assert.deepEqual(got.replies, want.replies, `${kind}: replies`);
        if (want.calls) assert.deepEqual(got.calls, want.calls, `${kind}: programs run`);
        if (want.powerState !== undefined) assert.equal(got.powerState, want.powerState, `${kind}: /sys/power/state`);
        // The channel still answers, and nothing else was sent.
        assert.equal(await rig.client.request({ execute: 'guest-ping' }), '{"return": {}}', kind);
      }
    });
  }

  test('guest-info lists the power commands with success-response false, in the reference order', async () => {
    const names: string[][] = [];
    for (const kind of KINDS) {
      const info = JSON.parse(await rigs.get(kind)!.client.request({ execute: 'guest-info' })) as {
        return: { supported_commands: { name: string; 'success-response': boolean }[] };
      };
      const power = info.return.supported_commands.filter((c) => /^guest-(shutdown|suspend-)/.test(c.name));
      assert.ok(
        power.every((c) => !c['success-response']),
        kind,
      );
      names.push(power.map((c) => c.name));
    }
    assert.deepEqual(names[0], ['guest-suspend-hybrid', 'guest-suspend-ram', 'guest-suspend-disk', 'guest-shutdown']);
    if (names.length === 2) assert.deepEqual(names[0], names[1]);
  });
});
