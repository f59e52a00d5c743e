import type { AgentContext } from '../context.js';
import type { CommandFamily } from '../qapi/types.js';

/** guest-file-open/close/read/write/seek/flush (issue 3). */
export async function fileCommands(_ctx: AgentContext): Promise<CommandFamily> {
  return { commands: [] };
}
