import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/**
 * The local time zone the way the reference finds it: qemu-ga asks GLib
 * (g_time_zone_new_local), which reads $TZ as a constant offset ("+05:30"),
 * a POSIX rule ("EST5EDT,M3.2.0,M11.1.0") or a TZif file name, and without
 * $TZ reads /etc/localtime. Whatever GLib cannot use is UTC. Node's Intl
 * data gives neither GLib's abbreviations nor its fallbacks, so the TZif
 * files and rules are read here.
 */

/** One local time type: seconds east of UTC, DST flag, abbreviation. */
export interface TimeType {
  readonly offset: number;
  readonly isDst: boolean;
  readonly abbrev: string;
}

interface Transition {
  /** Seconds since the epoch, UTC. */
  readonly time: number;
  readonly type: TimeType;
}

/** A date rule of a POSIX TZ string: Mm.w.d, Jn or n, and the local time of day it takes effect. */
type Boundary =
  | {
      readonly kind: 'mwd';
      readonly month: number;
      readonly week: number;
      readonly weekday: number;
      readonly time: number;
    }
  | { readonly kind: 'julian'; readonly day: number; readonly leap: boolean; readonly time: number };

/** A POSIX TZ rule; offsets in seconds east of UTC. */
interface Rule {
  readonly std: TimeType;
  readonly dst?: { readonly type: TimeType; readonly start: Boundary; readonly end: Boundary };
}

/** A zone: types in file order, then explicit transitions, then a rule for what follows them. */
interface Zone {
  readonly types: readonly TimeType[];
  readonly transitions: readonly Transition[];
  readonly footer?: Rule;
}

const UTC: TimeType = { offset: 0, isDst: false, abbrev: 'UTC' };

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';

/**
 * GLib's parse_time: "h", "hh", then optional ":mm" and ":ss" (the colons
 * required in RFC 8536 mode, which also allows up to 167 hours).
 */
function parseTime(s: string, rfc8536: boolean): number | undefined {
  let i = 0;
  if (!isDigit(s[i])) return undefined;
  let offset = 3600 * Number(s[i++]);
  if (i === s.length) return offset;
  if (s[i] !== ':') {
    if (!isDigit(s[i])) return undefined;
    offset = offset * 10 + 3600 * Number(s[i++]);
    if (rfc8536 && isDigit(s[i])) {
      offset = offset * 10 + 3600 * Number(s[i++]);
      if (offset > 167 * 3600) return undefined;
    } else if (!rfc8536 && offset > 24 * 3600) {
      return undefined;
    }
    if (i === s.length) return offset;
  }
  if (s[i] === ':') i++;
  else if (rfc8536) return undefined;
  if (!(s[i]! >= '0' && s[i]! <= '5')) return undefined;
  offset += 600 * Number(s[i++]);
  if (!isDigit(s[i])) return undefined;
  offset += 60 * Number(s[i++]);
  if (i === s.length) return offset;
  if (s[i] === ':') i++;
  else if (rfc8536) return undefined;
  if (!(s[i]! >= '0' && s[i]! <= '5')) return undefined;
  offset += 10 * Number(s[i++]);
  if (!isDigit(s[i])) return undefined;
  offset += Number(s[i++]);
  return i === s.length ? offset : undefined;
}

/** GLib's parse_constant_offset: "UTC" (outside RFC 8536 mode), "Z", "[+-]hh[:mm[:ss]]" or digits. */
export function parseConstantOffset(name: string, rfc8536: boolean): number | undefined {
  if (!rfc8536 && name === 'UTC') return 0;
  if (isDigit(name[0])) return parseTime(name, rfc8536);
  switch (name[0]) {
    case 'Z':
      return !rfc8536 && name.length === 1 ? 0 : undefined;
    case '+':
      return parseTime(name.slice(1), rfc8536);
    case '-': {
      const t = parseTime(name.slice(1), rfc8536);
      return t === undefined ? undefined : -t;
    }
    default:
      return undefined;
  }
}

/** A zone name: three or more letters, or <...> of letters, digits, + and -. */
function readName(s: string, pos: number): { name: string; end: number } | undefined {
  const quoted = s[pos] === '<';
  let i = quoted ? pos + 1 : pos;
  const start = i;
  if (quoted) {
    while (i < s.length && /[A-Za-z0-9+-]/.test(s[i]!)) i++;
    if (s[i] !== '>') return undefined;
  } else {
    while (i < s.length && /[A-Za-z]/.test(s[i]!)) i++;
  }
  if (i - start < 3) return undefined;
  // GLib keeps at most 32 bytes of a name.
  return { name: s.slice(start, Math.min(i, start + 32)), end: quoted ? i + 1 : i };
}

/** The characters of an offset ([+-:0-9]*) and their value in POSIX sign (west positive). */
function readOffset(s: string, pos: number): { offset: number | undefined; end: number } {
  let i = pos;
  while (i < s.length && /[+\-:0-9]/.test(s[i]!)) i++;
  return { offset: parseConstantOffset(s.slice(pos, i), true), end: i };
}

function parseBoundary(text: string): Boundary | undefined {
  let i = 0;
  let date:
    { kind: 'mwd'; month: number; week: number; weekday: number } | { kind: 'julian'; day: number; leap: boolean };
  if (text[0] === 'M') {
    const m = /^M(\d\d?)\.(\d)\.(\d)/.exec(text);
    if (!m) return undefined;
    const month = Number(m[1]);
    const week = Number(m[2]);
    const weekday = Number(m[3]);
    if (month < 1 || month > 12 || week < 1 || week > 5 || weekday > 6) return undefined;
    date = { kind: 'mwd', month, week, weekday };
    i = m[0].length;
  } else if (text[0] === 'J' || isDigit(text[0])) {
    const m = /^J?(\d*)/.exec(text)!;
    const day = Number(m[1] || '0');
    const leap = text[0] !== 'J';
    if (leap ? day > 365 : day < 1 || day > 365) return undefined;
    date = { kind: 'julian', day, leap };
    i = m[0].length;
  } else {
    return undefined;
  }
  if (text[i] === '/') {
    const time = parseConstantOffset(text.slice(i + 1), true);
    return time === undefined ? undefined : { ...date, time };
  }
  return i === text.length ? { ...date, time: 7200 } : undefined;
}

/**
 * GLib's rules_from_identifier: "std offset" or "std offset dst [offset],start[/time],end[/time]".
 * A DST name without the date rules is refused on Unix.
 */
export function parseRule(identifier: string): Rule | undefined {
  const std = readName(identifier, 0);
  if (!std) return undefined;
  const stdOff = readOffset(identifier, std.end);
  if (stdOff.offset === undefined) return undefined;
  const stdType: TimeType = { offset: -stdOff.offset, isDst: false, abbrev: std.name };
  if (stdOff.end === identifier.length) return { std: stdType };
  const dst = readName(identifier, stdOff.end);
  if (!dst) return undefined;
  const dstOff = readOffset(identifier, dst.end);
  let dstOffset = dstOff.offset ?? 0;
  // No (or a zero) DST offset: one hour ahead of standard time.
  if (dstOffset === 0) dstOffset = stdOff.offset - 3600;
  let pos = dstOff.end;
  if (pos >= identifier.length || identifier[pos] !== ',') return undefined;
  pos++;
  const startEnd = identifier.indexOf(',', pos);
  if (startEnd < 0) return undefined;
  const start = parseBoundary(identifier.slice(pos, startEnd));
  pos = startEnd + 1;
  let endEnd = identifier.indexOf(',', pos);
  if (endEnd < 0) endEnd = identifier.length;
  const end = parseBoundary(identifier.slice(pos, endEnd));
  if (!start || !end) return undefined;
  return { std: stdType, dst: { type: { offset: -dstOffset, isDst: true, abbrev: dst.name }, start, end } };
}

const DAY = 86400;
const MIN_RULE_YEAR = 1916;
const MAX_RULE_YEAR = 2999;

function daysFromCivil(year: number, month: number, day: number): number {
  return Math.floor(Date.UTC(year, month - 1, day) / 1000 / DAY);
}

const isLeap = (y: number): boolean => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

/** The UTC instant a boundary falls on in `year`, its local time read with `offset` (seconds east). */
function boundaryTime(b: Boundary, year: number, offset: number): number {
  let day: number;
  if (b.kind === 'mwd') {
    const first = daysFromCivil(year, b.month, 1);
    // 1970-01-01 was a Thursday (weekday 4).
    const firstWeekday = (((first + 4) % 7) + 7) % 7;
    day = first + ((b.weekday - firstWeekday + 7) % 7) + 7 * (b.week - 1);
    const nextMonth = b.month === 12 ? daysFromCivil(year + 1, 1, 1) : daysFromCivil(year, b.month + 1, 1);
    while (day >= nextMonth) day -= 7;
  } else {
    const jan1 = daysFromCivil(year, 1, 1);
    // Jn counts 1..365 and never Feb 29; n counts 0..365 with it.
    day = b.leap ? jan1 + b.day : jan1 + b.day - 1 + (isLeap(year) && b.day >= 60 ? 1 : 0);
  }
  return day * DAY + b.time - offset;
}

/** The rule's transitions in `year`, in time order. */
function ruleTransitions(rule: Rule, year: number): Transition[] {
  if (!rule.dst) return [];
  const start = boundaryTime(rule.dst.start, year, rule.std.offset);
  const end = boundaryTime(rule.dst.end, year, rule.dst.type.offset);
  const out = [
    { time: start, type: rule.dst.type },
    { time: end, type: rule.std },
  ];
  return out.sort((a, b) => a.time - b.time);
}

/** The local time type a rule gives at `now`, or undefined before the first of its transitions we consider. */
function ruleAt(rule: Rule, now: number, after = -Infinity): TimeType | undefined {
  if (!rule.dst) return undefined;
  const year = new Date(now * 1000).getUTCFullYear();
  let best: Transition | undefined;
  for (const y of [year - 1, year, year + 1]) {
    // GLib generates rule transitions for the years 1916 to 2998 only.
    if (y < MIN_RULE_YEAR || y >= MAX_RULE_YEAR) continue;
    for (const t of ruleTransitions(rule, y))
      if (t.time <= now && t.time > after && (!best || t.time > best.time)) best = t;
  }
  return best?.type;
}

/** A TZif file (RFC 8536) as GLib's init_zone_from_iana_info reads it; undefined where GLib gives up. */
export function parseTzif(data: Buffer): Zone | undefined {
  if (data.length < 44 || data.toString('latin1', 0, 4) !== 'TZif') return undefined;
  // tzh_ttisutcnt, tzh_ttisstdcnt, tzh_leapcnt, tzh_timecnt, tzh_typecnt, tzh_charcnt.
  type Counts = [number, number, number, number, number, number];
  const counts = (at: number): Counts => [0, 1, 2, 3, 4, 5].map((i) => data.readUInt32BE(at + 20 + 4 * i)) as Counts;
  let header = 0;
  let [isUt, isStd, leap, timeCnt, typeCnt, charCnt] = counts(0);
  const v2 = data[4]! >= 0x32;
  if (v2) {
    header = 44 + isUt + isStd + 8 * leap + 5 * timeCnt + 6 * typeCnt + charCnt;
    if (header + 44 > data.length) return undefined;
    [isUt, isStd, leap, timeCnt, typeCnt, charCnt] = counts(header);
  }
  const timeSize = v2 ? 8 : 4;
  const transAt = header + 44;
  const indexAt = transAt + timeSize * timeCnt;
  const typesAt = indexAt + timeCnt;
  const abbrsAt = typesAt + 6 * typeCnt;
  let footer: Rule | undefined;
  if (v2) {
    const at = abbrsAt + charCnt + 12 * leap + isStd + isUt;
    if (at > data.length - 2 || data[at] !== 0x0a) return undefined;
    const last = data.indexOf(0x0a, at + 1);
    if (last < 0) return undefined;
    if (last - at > 1) {
      footer = parseRule(data.toString('latin1', at + 1, last));
      // A footer GLib cannot read loses the whole zone.
      if (!footer) return undefined;
    }
  }
  if (abbrsAt + charCnt > data.length) return undefined;
  const types: TimeType[] = [];
  for (let i = 0; i < typeCnt; i++) {
    const at = typesAt + 6 * i;
    const abbrAt = abbrsAt + data[at + 5]!;
    let nul = data.indexOf(0, abbrAt);
    if (nul < 0) nul = data.length;
    types.push({
      offset: data.readInt32BE(at),
      isDst: data[at + 4] !== 0,
      abbrev: data.toString('latin1', abbrAt, nul),
    });
  }
  const transitions: Transition[] = [];
  for (let i = 0; i < timeCnt; i++) {
    const time = v2 ? Number(data.readBigInt64BE(transAt + 8 * i)) : data.readInt32BE(transAt + 4 * i);
    const type = types[data[indexAt + i]!];
    if (!type) return undefined;
    transitions.push({ time, type });
  }
  return footer
    ? { types: footer.dst ? [...types, footer.std, footer.dst.type] : [...types, footer.std], transitions, footer }
    : { types, transitions };
}

/** GLib's interval lookup at `now`: the last transition at or before it, else the first standard-time type. */
function zoneAt(zone: Zone, now: number): TimeType {
  let current: Transition | undefined;
  for (const t of zone.transitions) {
    if (t.time > now) break;
    current = t;
  }
  // Transitions from the footer rule follow the last explicit one.
  const last = zone.transitions.at(-1);
  if (zone.footer) {
    const fromRule = ruleAt(zone.footer, now, last ? last.time : -Infinity);
    if (fromRule) return fromRule;
  }
  if (current) return current.type;
  return zone.types.find((t) => !t.isDst) ?? zone.types[0] ?? UTC;
}

/** Where GLib looks for the zone of an unset $TZ: /etc/localtime, but only when it can name the zone. */
function localZoneFile(): string | undefined {
  let named = false;
  let notSymlink = false;
  try {
    const target = readlinkSync('/etc/localtime');
    const abs = isAbsolute(target) ? target : join('/etc', target);
    try {
      if (lstatSync(abs).isFile()) named = true;
      // A symlink to a symlink (toolbox containers): GLib falls back to the files below.
      else notSymlink = true;
    } catch {
      // A dangling link names nothing.
    }
  } catch (err) {
    notSymlink = (err as NodeJS.ErrnoException).code === 'EINVAL';
  }
  if (!named && notSymlink) {
    named = ['/var/db/zoneinfo', '/etc/timezone'].some(readable) || sysconfigClockZone();
  }
  return named ? '/etc/localtime' : undefined;
}

function readable(path: string): boolean {
  try {
    readFileSync(path);
    return true;
  } catch {
    return false;
  }
}

/** RHEL's /etc/sysconfig/clock names the zone in a ZONE= line. */
function sysconfigClockZone(): boolean {
  try {
    return /^\s*ZONE\s*=/m.test(readFileSync('/etc/sysconfig/clock', 'utf8'));
  } catch {
    return false;
  }
}

function zoneFromFile(path: string): Zone | undefined {
  try {
    return parseTzif(readFileSync(path));
  } catch {
    return undefined;
  }
}

/** GLib's g_time_zone_new_identifier: a constant offset, a POSIX rule, then a TZif file. */
function zoneFor(identifier: string | undefined): Zone | TimeType | Rule | undefined {
  if (identifier === undefined) {
    const file = localZoneFile();
    return file === undefined ? undefined : zoneFromFile(file);
  }
  const constant = parseConstantOffset(identifier, false);
  if (constant !== undefined) return { offset: constant, isDst: false, abbrev: identifier };
  const rule = parseRule(identifier);
  if (rule) return rule;
  const name = identifier.startsWith(':') ? identifier.slice(1) : identifier;
  const path = isAbsolute(name) ? name : join(process.env['TZDIR'] ?? '/usr/share/zoneinfo', name);
  return zoneFromFile(path);
}

/** The zone $TZ (or /etc/localtime) names, read once, as a lookup of the local time type at an instant. */
export function timeTypeFinder(tz: string | undefined = process.env['TZ']): (nowMs: number) => TimeType {
  const zone = zoneFor(tz);
  return (nowMs) => {
    const now = Math.floor(nowMs / 1000);
    if (!zone) return UTC;
    if ('abbrev' in zone) return zone;
    if ('std' in zone) return ruleAt(zone, now) ?? zone.std;
    return zoneAt(zone, now);
  };
}

/** The local time type now, as guest-get-timezone reports it. */
export function localTimeType(tz: string | undefined = process.env['TZ'], nowMs = Date.now()): TimeType {
  return timeTypeFinder(tz)(nowMs);
}

/** guest-get-timezone: the zone's abbreviation and its offset from UTC in seconds. */
export function getTimezone(): { zone: string; offset: number } {
  const t = localTimeType();
  return { zone: t.abbrev, offset: t.offset };
}
