import { realClockSystem, TimeSetter, type ClockSystem } from '../admin/clock.js';
import { setMemoryBlocks } from '../admin/memory-blocks.js';
import { realPasswordSystem, setUserPassword, type PasswordSystem } from '../admin/password.js';
import { setVcpus } from '../admin/vcpus.js';
import type { ArgSpec, CommandDef, CommandFamily } from '../qapi/types.js';
import { MEMORY_DIR } from '../system/memory-blocks.js';
import { CPU_DIR } from '../system/vcpus.js';

/** What the state-changing system commands touch; tests replace every part of it. */
export interface AdminSystem {
  readonly clock: ClockSystem;
  readonly password: PasswordSystem;
  /** /sys/devices/system/cpu */
  readonly cpuDir: string;
  /** /sys/devices/system/memory/ (with the trailing slash the reference's texts have) */
  readonly memDir: string;
}

export const realAdminSystem: AdminSystem = {
  clock: realClockSystem,
  password: realPasswordSystem,
  cpuDir: CPU_DIR,
  memDir: MEMORY_DIR,
};

/** The members of GuestLogicalProcessor and GuestMemoryBlock after their index. */
const STATE_MEMBERS: readonly ArgSpec[] = [
  { name: 'online', type: 'bool' },
  { name: 'can-offline', type: 'bool', optional: true },
];

/**
 * The state-changing system commands of qemu-ga 7.2, each where the reference
 * registers it (guest-info lists commands in registration order, newest first).
 */
export interface AdminFamilies {
  /** guest-set-time: between guest-get-time and guest-info. */
  readonly setTime: CommandDef;
  /** guest-set-vcpus: between guest-get-vcpus and guest-get-disks. */
  readonly setVcpus: CommandDef;
  /** guest-set-user-password: after guest-get-fsinfo, before guest-get-memory-blocks. */
  readonly password: CommandFamily;
  /** guest-set-memory-blocks: between guest-get-memory-blocks and guest-get-memory-block-info. */
  readonly setMemoryBlocks: CommandDef;
}

export function adminCommands(sys: AdminSystem = realAdminSystem): AdminFamilies {
  // One per agent: the reference checks for /sbin/hwclock once, at the first guest-set-time.
  const time = new TimeSetter(sys.clock);
  return {
    setTime: {
      name: 'guest-set-time',
      args: [{ name: 'time', type: 'int', optional: true }],
      run: async (args) => {
        await time.set(args['time'] as bigint | undefined);
      },
    },
    setVcpus: {
      name: 'guest-set-vcpus',
      args: [
        {
          name: 'vcpus',
          type: {
            list: {
              struct: 'GuestLogicalProcessor',
              members: [{ name: 'logical-id', type: 'int' }, ...STATE_MEMBERS],
            },
          },
        },
      ],
      run: (args) =>
        setVcpus(
          (args['vcpus'] as Record<string, unknown>[]).map((v) => ({
            logicalId: v['logical-id'] as bigint,
            online: v['online'] as boolean,
          })),
          sys.cpuDir,
        ),
    },
    password: {
      commands: [
        {
          name: 'guest-set-user-password',
          args: [
            { name: 'username', type: 'str' },
            { name: 'password', type: 'str' },
            { name: 'crypted', type: 'bool' },
          ],
          run: async (args) => {
            await setUserPassword(
              sys.password,
              args['username'] as string,
              args['password'] as string,
              args['crypted'] as boolean,
            );
          },
        },
      ],
    },
    setMemoryBlocks: {
      name: 'guest-set-memory-blocks',
      args: [
        {
          name: 'mem-blks',
          type: {
            list: { struct: 'GuestMemoryBlock', members: [{ name: 'phys-index', type: 'uint64' }, ...STATE_MEMBERS] },
          },
        },
      ],
      run: (args) =>
        setMemoryBlocks(
          (args['mem-blks'] as Record<string, unknown>[]).map((b) => ({
            physIndex: b['phys-index'] as bigint,
            online: b['online'] as boolean,
          })),
          sys.memDir,
        ),
    },
  };
}
