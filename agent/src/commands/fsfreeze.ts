import type { AgentContext } from '../context.js';
import type { CommandFamily } from '../qapi/types.js';

/** guest-fsfreeze-*, guest-get-fsinfo and the watchdog extension commands (issue 4). */
export async function fsfreezeCommands(_ctx: AgentContext): Promise<CommandFamily> {
  return { commands: [] };
}
