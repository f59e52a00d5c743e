import type { AgentContext } from '../context.js';
import type { CommandFamily } from '../qapi/types.js';

/** guest-network-get-interfaces (issue 3). */
export async function networkCommands(_ctx: AgentContext): Promise<CommandFamily> {
  return { commands: [] };
}
