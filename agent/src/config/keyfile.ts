/**
 * The GLib key-file format qemu-ga's config uses: `[group]` headers,
 * `key=value` lines, `#` comments, lists separated by `;`. Values are kept
 * raw (as GLib keeps them) and interpreted when read, with GLib's rules and
 * messages: a value starts after the blanks following `=` and keeps its
 * trailing blanks; escapes are \s \n \t \r \\ and nothing else.
 */
export class KeyFileError extends Error {}

export type KeyFile = Map<string, Map<string, string>>;

const SPACE = /^[ \t\n\v\f\r]*/;

export function parseKeyFile(text: string): KeyFile {
  const groups: KeyFile = new Map();
  let current: Map<string, string> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '').replace(SPACE, '');
    if (line === '' || line.startsWith('#')) continue;
    const group = /^\[([^\][]+)\][ \t\n\v\f\r]*$/.exec(line);
    if (group) {
      current = groups.get(group[1]!) ?? new Map<string, string>();
      groups.set(group[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    const key = eq < 0 ? '' : line.slice(0, eq).trimEnd();
    if (key === '')
      throw new KeyFileError(`Key file contains line “${line}” which is not a key-value pair, group, or comment`);
    if (!current) throw new KeyFileError('Key file does not start with a group');
    current.set(key, line.slice(eq + 1).replace(SPACE, ''));
  }
  return groups;
}

const uninterpretable = (key: string): KeyFileError =>
  new KeyFileError(`Key file contains key “${key}” which has a value that cannot be interpreted.`);

/** A raw value read as a string (g_key_file_get_string): escapes resolved, any other escape an error. */
export function keyFileString(value: string, key: string): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const e = value[++i];
    const resolved = e === undefined ? undefined : { s: ' ', n: '\n', t: '\t', r: '\r', '\\': '\\' }[e];
    if (resolved === undefined) throw uninterpretable(key);
    out += resolved;
  }
  return out;
}

/** A raw value read as a boolean (g_key_file_get_boolean): true/1 or false/0, trailing blanks allowed. */
export function keyFileBoolean(value: string, key: string): boolean {
  const v = value.replace(/[ \t\n\v\f\r]+$/, '');
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw uninterpretable(key);
}

/** A `;`-separated list (a trailing `;` is allowed). */
export function keyFileList(value: string): string[] {
  return value.split(';').filter((s) => s !== '');
}

/** A string as g_key_file_set_string() writes it: leading blanks as \s and \t, newlines, CR and backslashes escaped. */
export function keyFileEscape(value: string): string {
  let out = '';
  let leading = true;
  for (const c of value) {
    if (c === ' ' || c === '\t') {
      out += leading ? (c === ' ' ? '\\s' : '\\t') : c;
      continue;
    }
    if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\\') {
      out += '\\\\';
      leading = false;
    } else {
      out += c;
      leading = false;
    }
  }
  return out;
}
