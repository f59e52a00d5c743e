import type { AgentContext } from '../context.js';
import { realPowerSystem, type PowerSystem } from '../power/helpers.js';
import { shutdown } from '../power/shutdown.js';
import { suspend, type SuspendMode } from '../power/suspend.js';
import type { CommandFamily } from '../qapi/types.js';

/** guest-shutdown. Registered apart from the suspend commands to keep the reference's guest-info order. */
export async function powerCommands(ctx: AgentContext, sys: PowerSystem = realPowerSystem): Promise<CommandFamily> {
  return {
    commands: [
      {
        name: 'guest-shutdown',
        args: [{ name: 'mode', type: 'str', optional: true }],
        successResponse: false,
        run: async (args) => {
          const mode = args['mode'] as string | undefined;
          ctx.log({ kind: 'info', message: `guest-shutdown called, mode: ${mode ?? '(null)'}` });
          await shutdown(sys, mode);
        },
      },
    ],
  };
}

/** guest-suspend-disk, guest-suspend-ram, guest-suspend-hybrid. */
export async function suspendCommands(ctx: AgentContext, sys: PowerSystem = realPowerSystem): Promise<CommandFamily> {
  const command = (mode: SuspendMode) => ({
    name: `guest-suspend-${mode}`,
    successResponse: false,
    run: async () => {
      ctx.log({ kind: 'info', message: `guest-suspend-${mode} called` });
      await suspend(sys, mode);
    },
  });
  return { commands: [command('disk'), command('ram'), command('hybrid')] };
}
