/**
 * The GLib key-file format qemu-ga's config uses: `[group]` headers,
 * `key=value` lines, `#` comments, lists separated by `;`.
 */
export class KeyFileError extends Error {}

export type KeyFile = Map<string, Map<string, string>>;

export function parseKeyFile(text: string): KeyFile {
  const groups: KeyFile = new Map();
  let current: Map<string, string> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const group = /^\[([^\][]+)\]$/.exec(line);
    if (group) {
      current = groups.get(group[1]!) ?? new Map<string, string>();
      groups.set(group[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) throw new KeyFileError(`line '${line}' is not a key-value pair, group, or comment`);
    if (!current) throw new KeyFileError(`key file does not start with a group`);
    current.set(line.slice(0, eq).trim(), unescape(line.slice(eq + 1).trim()));
  }
  return groups;
}

function unescape(value: string): string {
  return value.replace(/\\([sntr\\])/g, (_, c: string) => ({ s: ' ', n: '\n', t: '\t', r: '\r', '\\': '\\' })[c]!);
}

export function keyFileBoolean(value: string, key: string): boolean {
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new KeyFileError(`key '${key}' has value '${value}' which cannot be interpreted as a boolean`);
}

/** A `;`-separated list (a trailing `;` is allowed). */
export function keyFileList(value: string): string[] {
  return value.split(';').filter((s) => s !== '');
}
