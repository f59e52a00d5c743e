import { accessSync, readFileSync, realpathSync, statSync } from 'node:fs';

/** Where sysfs and udev's database live (tests may point them elsewhere). */
export interface UdevPaths {
  readonly sys: string;
  readonly udevData: string;
}

export const SYSTEM_UDEV: UdevPaths = { sys: '/sys', udevData: '/run/udev/data' };

/** `path` is `root` or below it, component-wise (systemd's path_startswith). */
function under(path: string, root: string): boolean {
  return path === root || path.startsWith(`${root}/`);
}

/**
 * A device as libudev's udev_device_new_from_syspath() accepts it: the path
 * under /sys, its symlinks resolved, a `uevent` file for devices below
 * /sys/devices (anything else only needs to be a directory). Returns the
 * resolved path, or undefined where libudev returns NULL.
 */
export function resolveDevice(syspath: string, paths: UdevPaths = SYSTEM_UDEV): string | undefined {
  if (!under(syspath, paths.sys)) return undefined;
  let real: string;
  try {
    real = realpathSync(syspath);
  } catch {
    return undefined;
  }
  if (!under(real, paths.sys)) return undefined;
  try {
    if (under(real, `${paths.sys}/devices`)) accessSync(`${real}/uevent`);
    else if (!statSync(real).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  return real;
}

/** The uevent file's KEY=value lines. */
function uevent(real: string): Map<string, string> {
  const out = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync(`${real}/uevent`, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** udev_device_get_devnode(): /dev/ + DEVNAME from uevent (kept as is when already under /dev). */
export function devnode(syspath: string, paths: UdevPaths = SYSTEM_UDEV): string | undefined {
  const real = resolveDevice(syspath, paths);
  if (real === undefined) return undefined;
  const name = uevent(real).get('DEVNAME');
  if (name === undefined) return undefined;
  return under(name, '/dev') ? name : `/dev/${name}`;
}

/**
 * udev_device_get_property_value(): a property from the uevent file or,
 * for block and char devices, from udev's database (E:KEY=value lines).
 */
export function property(syspath: string, key: string, paths: UdevPaths = SYSTEM_UDEV): string | undefined {
  const real = resolveDevice(syspath, paths);
  if (real === undefined) return undefined;
  const ev = uevent(real);
  let value = ev.get(key);
  const major = ev.get('MAJOR');
  const minor = ev.get('MINOR');
  if (major !== undefined && minor !== undefined) {
    const kind = real.includes('/block/') ? 'b' : 'c';
    try {
      const db = readFileSync(`${paths.udevData}/${kind}${major}:${minor}`, 'utf8');
      for (const line of db.split('\n')) {
        if (line.startsWith(`E:${key}=`)) value = line.slice(key.length + 3);
      }
    } catch {
      // No database entry: udev has not processed the device (or does not run).
    }
  }
  return value;
}
