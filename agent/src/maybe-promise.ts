/**
 * A value now, or a promise of it. The request path keeps a value a value:
 * a request whose every step is synchronous (the thaw) goes from bytes in to
 * reply out in one turn, where under emulation each turn through a promise
 * costs measurable time inside the frozen window.
 */
export type MaybePromise<T> = T | Promise<T>;
