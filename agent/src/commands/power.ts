import type { AgentContext } from '../context.js';
import type { CommandFamily } from '../qapi/types.js';

/** guest-shutdown and guest-suspend-disk/ram/hybrid (issue 3). */
export async function powerCommands(_ctx: AgentContext): Promise<CommandFamily> {
  return { commands: [] };
}
