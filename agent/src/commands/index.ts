import type { CommandDef, CommandFamily } from '../qapi/types.js';
import type { AgentContext } from '../context.js';
import { adminCommands } from './admin.js';
import { execCommands } from './exec.js';
import { fileCommands } from './file.js';
import { fsfreezeCommands } from './fsfreeze.js';
import { fstrimCommands } from './fstrim.js';
import { networkCommands } from './network.js';
import { powerCommands, suspendCommands } from './power.js';
import { sshCommands } from './ssh.js';
import { syncInfoCommands } from './sync-info.js';
import { systemCommands } from './system.js';

/** The family with `command` registered just before the one named `before`. */
function insertBefore(family: CommandFamily, before: string, command: CommandDef): CommandFamily {
  const at = family.commands.findIndex((c) => c.name === before);
  if (at < 0) throw new Error(`command ${before} is not registered`);
  return { ...family, commands: [...family.commands.slice(0, at), command, ...family.commands.slice(at)] };
}

/**
 * Every command family, in registration order (guest-info lists them newest
 * first, as the reference does). Families get the context to keep state.
 */
export async function commandFamilies(ctx: AgentContext): Promise<CommandFamily[]> {
  // Created first: a frozen-state marker must put the agent in frozen mode before any family touches the disk.
  const fsfreeze = await fsfreezeCommands(ctx);
  const system = systemCommands();
  const admin = adminCommands();
  return [
    // guest-get-time then guest-set-time sit between guest-ping and guest-info in the reference's schema.
    insertBefore(insertBefore(syncInfoCommands(), 'guest-info', system.time), 'guest-info', admin.setTime),
    await powerCommands(ctx),
    await fileCommands(ctx),
    fsfreeze.freeze,
    // guest-fstrim: after guest-fsfreeze-thaw, before the suspend commands.
    fstrimCommands(ctx),
    // After fsfreeze, as the reference registers them (guest-info order).
    await suspendCommands(ctx),
    await networkCommands(ctx),
    // guest-set-vcpus sits between guest-get-vcpus and guest-get-disks.
    insertBefore(system.cpusAndDisks, 'guest-get-disks', admin.setVcpus),
    // guest-get-fsinfo comes after the disks in the reference; then this agent's extensions.
    fsfreeze.fsinfo,
    admin.password,
    insertBefore(system.memory, 'guest-get-memory-block-info', admin.setMemoryBlocks),
    // guest-exec-status and guest-exec: after guest-get-memory-block-info, before guest-get-host-name.
    execCommands(ctx),
    system.info,
    // The ssh key commands: after guest-get-devices, before the stats.
    sshCommands(),
    system.stats,
  ];
}
