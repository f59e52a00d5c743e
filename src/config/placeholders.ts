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

const TOKEN = /\{\{|\}\}|\{([A-Za-z]+)\}/g;

/** Placeholder names used in a template that do not exist. */
export function unknownPlaceholders(template: string): string[] {
  const bad: string[] = [];
  for (const m of template.matchAll(TOKEN)) {
    if (m[1] !== undefined && !PLACEHOLDERS.includes(m[1] as keyof PlaceholderValues)) bad.push(m[1]);
  }
  return bad;
}

/** Substitutes {name} in one argument; {{ and }} stand for literal braces. */
export function fillPlaceholders(template: string, values: PlaceholderValues): string {
  return template.replace(TOKEN, (whole, key: string | undefined) => {
    if (whole === '{{') return '{';
    if (whole === '}}') return '}';
    return values[key as keyof PlaceholderValues];
  });
}

export function fillArgv(argv: readonly string[], values: PlaceholderValues): string[] {
  return argv.map((a) => fillPlaceholders(a, values));
}

export function timeValues(now: Date): Pick<PlaceholderValues, 'timestamp' | 'date'> {
  const iso = now.toISOString();
  return { timestamp: `${iso.slice(0, 19).replace(/[-:]/g, '')}Z`, date: iso.slice(0, 10) };
}
