import type { CommandFamily } from '../qapi/types.js';
import type { AgentContext } from '../context.js';
import { fileCommands } from './file.js';
import { fsfreezeCommands } from './fsfreeze.js';
import { networkCommands } from './network.js';
import { powerCommands, suspendCommands } from './power.js';
import { syncInfoCommands } from './sync-info.js';

/**
 * Every command family, in registration order (guest-info lists them newest
 * first, as the reference does). Families get the context to keep state.
 */
export async function commandFamilies(ctx: AgentContext): Promise<CommandFamily[]> {
  // Created first: a frozen-state marker must put the agent in frozen mode before any family touches the disk.
  const fsfreeze = await fsfreezeCommands(ctx);
  return [
    syncInfoCommands(),
    await powerCommands(ctx),
    await fileCommands(ctx),
    fsfreeze.freeze,
    // After fsfreeze, as the reference registers them (guest-info order).
    await suspendCommands(ctx),
    await networkCommands(ctx),
    // guest-get-fsinfo comes after the network commands in the reference; then this agent's extensions.
    fsfreeze.fsinfo,
  ];
}
