import { nssUserLookup, type UserLookup } from '../admin/passwd.js';
import { addAuthorizedKeys, getAuthorizedKeys, removeAuthorizedKeys } from '../admin/ssh-keys.js';
import type { CommandFamily } from '../qapi/types.js';

/**
 * guest-ssh-get-authorized-keys, guest-ssh-add-authorized-keys and
 * guest-ssh-remove-authorized-keys, registered after guest-get-devices as the
 * reference does. `lookup` finds users (getpwnam through NSS by default).
 */
export function sshCommands(lookup: UserLookup = nssUserLookup()): CommandFamily {
  const username = { name: 'username', type: 'str' } as const;
  const keys = { name: 'keys', type: { list: 'str' } } as const;
  return {
    commands: [
      {
        name: 'guest-ssh-get-authorized-keys',
        args: [username],
        run: (args) => getAuthorizedKeys(lookup, args['username'] as string),
      },
      {
        name: 'guest-ssh-add-authorized-keys',
        args: [username, keys, { name: 'reset', type: 'bool', optional: true }],
        run: async (args) => {
          await addAuthorizedKeys(
            lookup,
            args['username'] as string,
            args['keys'] as string[],
            (args['reset'] as boolean | undefined) ?? false,
          );
        },
      },
      {
        name: 'guest-ssh-remove-authorized-keys',
        args: [username, keys],
        run: async (args) => {
          await removeAuthorizedKeys(lookup, args['username'] as string, args['keys'] as string[]);
        },
      },
    ],
  };
}
