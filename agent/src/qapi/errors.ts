import type { ErrorClass } from '../protocol/index.js';

/** An error a command answers with: the reference's class and text. */
export class QgaError extends Error {
  constructor(
    message: string,
    readonly errorClass: ErrorClass = 'GenericError',
  ) {
    super(message);
    this.name = 'QgaError';
  }
}
