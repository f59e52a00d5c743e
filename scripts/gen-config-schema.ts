// Writes config/quiesce.schema.json, the JSON Schema of the config file for editors (yaml-language-server,
// VS Code), from the zod schema in src/config/schema.ts, the one source of the config's shape.
// Run: npx tsx scripts/gen-config-schema.ts   (test/host/config/schema-json.test.ts fails when the file drifts)
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { ZodFirstPartyTypeKind, type ZodTypeDef, type ZodTypeAny } from 'zod';
import { ignoreOverride, zodToJsonSchema } from 'zod-to-json-schema';
import { configSchema } from '../src/config/schema.js';
import { DURATION_FORMS } from '../src/config/duration.js';

export const SCHEMA_FILE = fileURLToPath(new URL('../config/quiesce.schema.json', import.meta.url));

/**
 * The string form src/config/duration.ts accepts (its DURATION_TEXT, which is not exported): the test
 * checks the two agree. The schema cannot say each setting's range (a budget above 0 and up to 24h, a
 * step up to 7d): the units vary, so resolveConfig alone enforces the bounds.
 */
export const DURATION_PATTERN = '^\\s*(\\d+(?:\\.\\d+)?)\\s*(ms|s|m|h|d)?\\s*$';

/** durationIn(range): a transform over number | string; nothing else in the config schema has that shape. */
function isDuration(def: ZodTypeDef): boolean {
  const d = def as { typeName?: string; effect?: { type?: string }; schema?: ZodTypeAny };
  if (d.typeName !== ZodFirstPartyTypeKind.ZodEffects || d.effect?.type !== 'transform') return false;
  const inner = d.schema?._def as { typeName?: string; options?: ZodTypeAny[] } | undefined;
  const kinds = inner?.options?.map((o) => (o._def as { typeName?: string }).typeName).sort();
  return (
    inner?.typeName === ZodFirstPartyTypeKind.ZodUnion &&
    kinds?.join() === [ZodFirstPartyTypeKind.ZodNumber, ZodFirstPartyTypeKind.ZodString].join()
  );
}

/** The JSON Schema (draft-07) of a quiesce config file, as an object; deterministic. */
export function configJsonSchema(): Record<string, unknown> {
  const schema = zodToJsonSchema(configSchema, {
    // Inline every shared part (timeouts, argv): no "#/properties/..." paths into other keys.
    $refStrategy: 'none',
    // Every duration setting points at one definition instead of repeating it 17 times.
    override: (def) => (isDuration(def) ? { $ref: '#/definitions/duration' } : ignoreOverride),
  }) as Record<string, unknown>;
  const { $schema, ...rest } = schema;
  return {
    $schema,
    title: 'quiesce configuration',
    description:
      'Generated from src/config/schema.ts by scripts/gen-config-schema.ts; do not edit. Looser than quiesce itself: duration ranges, references between keys (job guests, groups), duplicates and placeholders are checked by `quiesce plan`.',
    ...rest,
    definitions: {
      duration: {
        description: `A duration: ${DURATION_FORMS}. Ranges: budget, lockWait and agent timeouts up to 24h, step timeouts up to 7d, all but lockWait above 0.`,
        anyOf: [
          { type: 'number', minimum: 0 },
          { type: 'string', pattern: DURATION_PATTERN },
        ],
      },
    },
  };
}

/** The file's text: formatted as `prettier --check .` wants it (the repo's .prettierrc.json applies). */
export async function configJsonSchemaText(): Promise<string> {
  const options = (await prettier.resolveConfig(SCHEMA_FILE)) ?? {};
  return prettier.format(JSON.stringify(configJsonSchema()), { ...options, filepath: SCHEMA_FILE });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(SCHEMA_FILE, await configJsonSchemaText());
  console.log(`wrote ${SCHEMA_FILE}`);
}
