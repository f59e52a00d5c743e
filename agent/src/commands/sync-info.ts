import type { AgentContext } from '../context.js';
import type { CommandFamily } from '../qapi/types.js';

/** guest-sync-delimited, guest-sync, guest-ping and guest-info. */
export function syncInfoCommands(): CommandFamily {
  return {
    commands: [
      {
        name: 'guest-sync-delimited',
        args: [{ name: 'id', type: 'int' }],
        freezeSafe: true,
        run: (args, ctx: AgentContext) => {
          ctx.delimitResponse();
          return args['id'] as bigint;
        },
      },
      {
        name: 'guest-sync',
        args: [{ name: 'id', type: 'int' }],
        freezeSafe: true,
        run: (args) => args['id'] as bigint,
      },
      { name: 'guest-ping', freezeSafe: true, run: () => undefined },
      {
        name: 'guest-info',
        freezeSafe: true,
        run: (_args, ctx) => ({
          version: ctx.version,
          supported_commands: ctx.commandInfo().map((c) => ({
            name: c.name,
            enabled: c.enabled,
            'success-response': c.successResponse,
          })),
        }),
      },
    ],
  };
}
