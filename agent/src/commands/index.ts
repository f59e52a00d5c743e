import type { CommandDef, CommandFamily } from '../qapi/types.js';
import type { AgentContext } from '../context.js';
import { fileCommands } from './file.js';
import { fsfreezeCommands } from './fsfreeze.js';
import { networkCommands } from './network.js';
import { powerCommands, suspendCommands } from './power.js';
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
  return [
    // guest-get-time sits between guest-ping and guest-info in the reference's schema.
    insertBefore(syncInfoCommands(), 'guest-info', system.time),
    await powerCommands(ctx),
    await fileCommands(ctx),
    fsfreeze.freeze,
    // After fsfreeze, as the reference registers them (guest-info order).
    await suspendCommands(ctx),
    await networkCommands(ctx),
    system.cpusAndDisks,
    // guest-get-fsinfo comes after the disks in the reference; then this agent's extensions.
    fsfreeze.fsinfo,
    system.memory,
    system.info,
    system.stats,
  ];
}
