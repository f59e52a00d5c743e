import type { CommandFamily } from '../qapi/types.js';
import type { AgentContext } from '../context.js';
import { syncInfoCommands } from './sync-info.js';

/**
 * Every command family, in registration order (guest-info lists them newest
 * first, as the reference does). Families get the context to keep state.
 */
export async function commandFamilies(_ctx: AgentContext): Promise<CommandFamily[]> {
  return [syncInfoCommands()];
}
