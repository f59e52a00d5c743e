// The time zone code against GLib itself (what qemu-ga calls), through PyGObject when the machine
// has it: every TZif file of the system and a set of $TZ strings, at instants from 1901 to 2100.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseConstantOffset, parseRule, timeTypeFinder } from '../../../agent/src/system/timezone.js';

const ZONEINFO = '/usr/share/zoneinfo';
const PYTHON = '/usr/bin/python3';

const ORACLE = `
import sys, json
from gi.repository import GLib
req = json.load(sys.stdin)
out = {}
for z in req['zones']:
    try:
        tz = GLib.TimeZone.new_identifier(z)
    except TypeError:
        tz = None
    if tz is None:
        tz = GLib.TimeZone.new_utc()
    out[z] = [[tz.get_abbreviation(i), tz.get_offset(i)] for i in (tz.find_interval(GLib.TimeType.UNIVERSAL, t) for t in req['times'])]
json.dump(out, sys.stdout)
`;

function haveGlibOracle(): boolean {
  return spawnSync(PYTHON, ['-c', 'from gi.repository import GLib']).status === 0;
}

function zoneFiles(dir = ZONEINFO, prefix = ''): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const name = prefix + e.name;
    if (e.isDirectory()) return zoneFiles(join(dir, e.name), `${name}/`);
    return /\.(tab|zi)$|^leap|SECURITY/.test(e.name) ? [] : [name];
  });
}

const TZ_STRINGS = [
  '',
  'UTC',
  'UTC0',
  'GMT',
  'XYZ3',
  'XYZ-3ABC',
  'JST-9',
  '<-03>3',
  '<+0545>-5:45',
  '+05:30',
  'Z',
  '-03',
  '5',
  '0530',
  '+25',
  'EST5EDT,M3.2.0,M11.1.0',
  'EST5EDT4,M3.2.0/2:30,M11.1.0/1:00:30',
  'CET-1CEST,M3.5.0,M10.5.0/3',
  'AEST-10AEDT,M10.1.0,M4.1.0/3',
  'IST-2IDT,M3.4.4/26,M10.5.0',
  '<+03>-3<+04>,M3.5.0/-2,M10.5.0/-1',
  'ABCD3EFGH,M3.5.0/30,M10.5.0',
  'ABC3DEF,M13.1.0,M11.1.0',
  'ab3cd,M3.2.0,M11.1.0,extra',
  ':UTC',
  ':Europe/Paris',
  '/usr/share/zoneinfo/Asia/Tokyo',
  '/nonexistent',
  '/etc',
  'Nonsense/Zone',
];

// 1901, every 202 days from 1990 to 2040 (both seasons, drifting through the year), 2100, now.
const TIMES = [
  -2_000_000_000,
  ...Array.from({ length: 90 }, (_, i) => 631_152_000 + i * 17_452_800),
  4_102_444_800,
  Math.floor(Date.now() / 1000),
];

describe('local time zone like GLib 2.74', () => {
  test('constant offsets: "UTC", "Z", [+-]hh[:mm[:ss]] (colons optional outside RFC 8536 mode)', () => {
    assert.equal(parseConstantOffset('UTC', false), 0);
    assert.equal(parseConstantOffset('UTC', true), undefined);
    assert.equal(parseConstantOffset('+05:30', false), 19800);
    assert.equal(parseConstantOffset('0530', false), 19800);
    assert.equal(parseConstantOffset('0530', true), undefined);
    assert.equal(parseConstantOffset('-03', false), -10800);
    assert.equal(parseConstantOffset('+25', false), undefined);
    assert.equal(parseConstantOffset('26', true), 93600);
  });

  test('POSIX rules: names, offsets west-positive, DST an hour ahead unless given, date rules required', () => {
    assert.deepEqual(parseRule('JST-9'), { std: { offset: 32400, isDst: false, abbrev: 'JST' } });
    assert.equal(parseRule('EST5EDT'), undefined);
    assert.equal(parseRule('AB3'), undefined);
    const r = parseRule('<+03>-3<+04>,M3.5.0/-2,M10.5.0/-1');
    assert.equal(r?.dst?.type.abbrev, '+04');
    assert.equal(r?.dst?.type.offset, 14400);
  });

  test(
    'every zone file and $TZ string agrees with GLib from 1901 to 2100',
    { skip: haveGlibOracle() ? false : 'needs python3-gi (PyGObject with GLib) as the oracle' },
    () => {
      const zones = [...zoneFiles(), ...TZ_STRINGS];
      const r = spawnSync(PYTHON, ['-c', ORACLE], {
        input: JSON.stringify({ zones, times: TIMES }),
        maxBuffer: 64 * 1024 * 1024,
      });
      assert.equal(r.status, 0, r.stderr.toString());
      const glib = JSON.parse(r.stdout.toString()) as Record<string, [string, number][]>;
      const differing: string[] = [];
      for (const z of zones) {
        const at = timeTypeFinder(z);
        const ours = TIMES.map((t) => {
          const x = at(t * 1000);
          return [x.abbrev, x.offset];
        });
        if (JSON.stringify(ours) !== JSON.stringify(glib[z])) differing.push(z);
      }
      assert.ok(zones.length > 30);
      assert.deepEqual(differing, []);
    },
  );
});
