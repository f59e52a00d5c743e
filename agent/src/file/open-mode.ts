import { constants } from 'node:fs';
import { QgaError } from '../qapi/errors.js';

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_NOCTTY, O_NONBLOCK } = constants;

/** What an fopen() mode string means for the descriptor the agent opens. */
export interface OpenMode {
  /** The mode as the client gave it (error texts quote it). */
  readonly text: string;
  /** open(2) flags, O_NOCTTY and O_NONBLOCK included as the reference sets them. */
  readonly flags: number;
  readonly create: boolean;
  readonly append: boolean;
}

/** The reference's table (qga/commands-posix.c guest_file_open_modes): fopen()'s forms, 'b' ignored. */
const MODES: readonly (readonly [readonly string[], number])[] = [
  [['r'], O_RDONLY],
  [['rb'], O_RDONLY],
  [['w'], O_WRONLY | O_CREAT | O_TRUNC],
  [['wb'], O_WRONLY | O_CREAT | O_TRUNC],
  [['a'], O_WRONLY | O_CREAT | O_APPEND],
  [['ab'], O_WRONLY | O_CREAT | O_APPEND],
  [['r+'], O_RDWR],
  [['rb+', 'r+b'], O_RDWR],
  [['w+'], O_RDWR | O_CREAT | O_TRUNC],
  [['wb+', 'w+b'], O_RDWR | O_CREAT | O_TRUNC],
  [['a+'], O_RDWR | O_CREAT | O_APPEND],
  [['ab+', 'a+b'], O_RDWR | O_CREAT | O_APPEND],
];

/**
 * Looks up a mode string. Non-blocking so that a named pipe cannot hang the
 * agent (the reference's reason); close-on-exec comes with every descriptor
 * Node opens.
 */
export function parseOpenMode(text: string): OpenMode {
  const entry = MODES.find(([forms]) => forms.includes(text));
  if (!entry) throw new QgaError(`invalid file open mode '${text}'`);
  const base = entry[1];
  return {
    text,
    flags: base | O_NOCTTY | O_NONBLOCK,
    create: (base & O_CREAT) !== 0,
    append: (base & O_APPEND) !== 0,
  };
}
