/**
 * The guest-agent wire protocol as the reference agent (qemu-ga) speaks it:
 * bytes → tokens → messages, and values → bytes. No Node I/O here; the host
 * tool imports this as `quiesce-agent/protocol`.
 */
export { JsonLexer, Tok, MAX_TOKEN_SIZE } from './lexer.js';
export { JsonStreamer, MAX_NESTING, MAX_TOKEN_COUNT, type Message } from './streamer.js';
export { JsonParseError, parseTokens } from './parser.js';
export { encode, formatDouble, quote, type JsonOut } from './encoder.js';
export { QNum, isQDict, INT64_MAX, INT64_MIN, UINT64_MAX, type QDict, type QObject } from './qobject.js';
export { qdictOrder, firstUnvisited } from './dict-order.js';
export { cStringToText } from './utf8.js';
export { SENTINEL, encodeResponse, errorResponse, type ErrorClass } from './response.js';
