/** Values substituted into argv templates, one argument at a time (never through a shell). */
export interface PlaceholderValues {
  readonly guest: string;
  readonly job: string;
  readonly runId: string;
  /** UTC, e.g. 20261125T054700Z — sorts as text. */
  readonly timestamp: string;
  /** UTC date, e.g. 2026-11-25. */
  readonly date: string;
  readonly stateDir: string;
}

export const PLACEHOLDERS: readonly (keyof PlaceholderValues)[] = [
  'guest',
  'job',
  'runId',
  'timestamp',
  'date',
  'stateDir',
];

/**
 * {{, }} or {name}. A name is any run of identifier characters, so {nope1} and
 * {a_b} are reported as unknown instead of passing through literally; braces
 * around anything else ({print $1}, {}, {1..3}) stay literal text.
 */
const TOKEN = /\{\{|\}\}|\{([A-Za-z0-9_]+)\}/g;

/** Placeholder names used in a template that do not exist (`extra`: names valid only in this template). */
export function unknownPlaceholders(template: string, extra: readonly string[] = []): string[] {
  const bad: string[] = [];
  for (const m of template.matchAll(TOKEN)) {
    if (m[1] !== undefined && !PLACEHOLDERS.includes(m[1] as keyof PlaceholderValues) && !extra.includes(m[1]))
      bad.push(m[1]);
  }
  return bad;
}

/** True when the template uses placeholder `name`. */
export function usesPlaceholder(template: string, name: string): boolean {
  return [...template.matchAll(TOKEN)].some((m) => m[1] === name);
}

/**
 * Fills every placeholder but those in `keep`, and returns a template again:
 * kept placeholders stay, literal braces (escaped or inserted by a value) come
 * out doubled, so a later fillPlaceholders() of the kept names is exact.
 */
export function fillExcept(template: string, values: PlaceholderValues, keep: readonly string[]): string {
  const escape = (s: string) => s.replace(/[{}]/g, (c) => c + c);
  return template.replace(TOKEN, (whole, key: string | undefined) => {
    // An unknown name stays, as fillPlaceholders() leaves it (validation reports it first).
    if (key === undefined || keep.includes(key) || !Object.hasOwn(values, key)) return whole;
    return escape(values[key as keyof PlaceholderValues]);
  });
}

/** Substitutes {name} in one argument; {{ and }} stand for literal braces. */
export function fillPlaceholders(
  template: string,
  values: PlaceholderValues | Readonly<Record<string, string>>,
): string {
  return template.replace(TOKEN, (whole, key: string | undefined) => {
    if (whole === '{{') return '{';
    if (whole === '}}') return '}';
    // Own keys only: {constructor} is not a value.
    return Object.hasOwn(values, key!) ? (values as Readonly<Record<string, string>>)[key!]! : whole;
  });
}

export function fillArgv(argv: readonly string[], values: PlaceholderValues): string[] {
  return argv.map((a) => fillPlaceholders(a, values));
}

export function timeValues(now: Date): Pick<PlaceholderValues, 'timestamp' | 'date'> {
  const iso = now.toISOString();
  return { timestamp: `${iso.slice(0, 19).replace(/[-:]/g, '')}Z`, date: iso.slice(0, 10) };
}
