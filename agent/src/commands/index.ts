import type { CommandFamily } from '../qapi/types.js';
import type { AgentContext } from '../context.js';
import { fileCommands } from './file.js';
import { fsfreezeCommands } from './fsfreeze.js';
import { networkCommands } from './network.js';
import { powerCommands } from './power.js';
import { syncInfoCommands } from './sync-info.js';

/**
 * Every command family, in registration order (guest-info lists them newest
 * first, as the reference does). Families get the context to keep state.
 */
export async function commandFamilies(ctx: AgentContext): Promise<CommandFamily[]> {
  return [
    syncInfoCommands(),
    await powerCommands(ctx),
    await fileCommands(ctx),
    await fsfreezeCommands(ctx),
    await networkCommands(ctx),
  ];
}
