/**
 * The little XML this provider reads and writes: the disks of a domain's XML
 * (as libvirt formats it: attributes quoted with ', entities escaped) and the
 * backup and snapshot documents it sends. Reading is deliberately narrow — the
 * direct children of each <disk> that matter — rather than a general parser.
 */

/** A disk of the domain, as its live XML describes it. */
export interface DomainDisk {
  /** The target device name (`vda`): how libvirt's backup, snapshot and block-job calls name the disk. */
  readonly name: string;
  /** disk, cdrom, floppy or lun. */
  readonly device: string;
  /** file, block, network, volume, … */
  readonly type: string;
  /** The active image: a file or block device path, or a network source's name. */
  readonly source: string | undefined;
  /** The driver's format (raw, qcow2). */
  readonly format: string | undefined;
  readonly readonly: boolean;
  readonly transient: boolean;
  /** The disk has a backing chain (the active image is an overlay). */
  readonly backed: boolean;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function unescape(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) =>
    e.startsWith('#x')
      ? String.fromCodePoint(parseInt(e.slice(2), 16))
      : e.startsWith('#')
        ? String.fromCodePoint(Number(e.slice(1)))
        : ENTITIES[e]!,
  );
}

/** Text for an attribute value or element content. */
export function escapeXml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

function attributes(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/([A-Za-z_][\w:.-]*)\s*=\s*(?:'([^']*)'|"([^"]*)")/g))
    out[m[1]!] = unescape(m[2] ?? m[3] ?? '');
  return out;
}

/** The first opening tag `<name …>` or `<name …/>` in `xml`, as its attributes. */
function firstTag(xml: string, name: string): Record<string, string> | undefined {
  const m = new RegExp(`<${name}(\\s[^>]*)?/?>`).exec(xml);
  return m ? attributes(m[1] ?? '') : undefined;
}

/** Removes every `<name …>…</name>` (nested ones included) and `<name/>` from `xml`. */
function strip(xml: string, name: string): string {
  let out = xml.replace(new RegExp(`<${name}(\\s[^>]*)?/>`, 'g'), '');
  for (;;) {
    const open = new RegExp(`<${name}(\\s[^>]*)?>`).exec(out);
    if (!open) return out;
    // Find the matching close, counting nested opens.
    const re = new RegExp(`<${name}(\\s[^>]*)?>|</${name}>`, 'g');
    re.lastIndex = open.index;
    let depth = 0;
    let end = -1;
    for (let m = re.exec(out); m; m = re.exec(out)) {
      depth += m[0].startsWith('</') ? -1 : 1;
      if (depth === 0) {
        end = m.index + m[0].length;
        break;
      }
    }
    if (end < 0) return out.slice(0, open.index);
    out = out.slice(0, open.index) + out.slice(end);
  }
}

/** The disks of a domain XML (`<devices><disk …>`), in document order. */
export function parseDisks(domainXml: string): DomainDisk[] {
  const disks: DomainDisk[] = [];
  for (const m of domainXml.matchAll(/<disk(\s[^>]*)?>([\s\S]*?)<\/disk>/g)) {
    const attrs = attributes(m[1] ?? '');
    const body = m[2]!;
    const backed = /<backingStore(\s[^>]*)?>[\s\S]*?<source/.test(body);
    const own = strip(strip(body, 'backingStore'), 'mirror');
    const target = firstTag(own, 'target');
    if (!target?.['dev']) continue;
    const source = firstTag(own, 'source');
    disks.push({
      name: target['dev'],
      device: attrs['device'] ?? 'disk',
      type: attrs['type'] ?? 'file',
      source: source?.['file'] ?? source?.['dev'] ?? source?.['name'] ?? source?.['volume'],
      format: firstTag(own, 'driver')?.['type'],
      readonly: /<readonly\s*\/>/.test(own),
      transient: /<transient(\s[^>]*)?\/?>/.test(own),
      backed,
    });
  }
  return disks;
}

/** The domain's name in its XML. */
export function domainName(domainXml: string): string | undefined {
  const m = /<name>([^<]*)<\/name>/.exec(domainXml);
  return m ? unescape(m[1]!) : undefined;
}

/** Can this disk be copied or snapshotted: a writable, non-transient disk with an image. */
export function isCandidate(d: DomainDisk): boolean {
  return d.device === 'disk' && !d.readonly && !d.transient && d.source !== undefined;
}

/** One disk of the run: where its copy or overlay goes. */
export interface PickedDisk {
  readonly disk: DomainDisk;
  readonly target: string;
}

/**
 * `<domainbackup mode='push'>`: one target file per picked disk, every other
 * disk of the domain listed with backup='no' (so nothing is copied that the
 * config did not ask for). With `incremental`, only what changed since that
 * checkpoint is copied (its bitmaps); without, a full copy.
 */
export function backupXml(
  all: readonly DomainDisk[],
  picked: readonly PickedDisk[],
  format: 'raw' | 'qcow2',
  o: { readonly incremental?: string } = {},
): string {
  const lines = all.map((d) => {
    const p = picked.find((x) => x.disk.name === d.name);
    if (!p) return `    <disk name='${escapeXml(d.name)}' backup='no'/>`;
    return (
      `    <disk name='${escapeXml(d.name)}' backup='yes' type='file'>` +
      `<target file='${escapeXml(p.target)}'/><driver type='${format}'/></disk>`
    );
  });
  const since = o.incremental === undefined ? '' : `  <incremental>${escapeXml(o.incremental)}</incremental>\n`;
  return `<domainbackup mode='push'>\n${since}  <disks>\n${lines.join('\n')}\n  </disks>\n</domainbackup>\n`;
}

/**
 * `<domaincheckpoint>` named `name`: a bitmap in each picked disk (qcow2),
 * every other disk of the domain checkpoint='no' (raw disks cannot hold one).
 */
export function checkpointXml(name: string, all: readonly DomainDisk[], picked: readonly PickedDisk[]): string {
  const lines = all.map((d) =>
    picked.some((p) => p.disk.name === d.name)
      ? `    <disk name='${escapeXml(d.name)}' checkpoint='bitmap'/>`
      : `    <disk name='${escapeXml(d.name)}' checkpoint='no'/>`,
  );
  return (
    `<domaincheckpoint>\n  <name>${escapeXml(name)}</name>\n  <description>quiesce: changes since backup ${escapeXml(name)}</description>\n` +
    `  <disks>\n${lines.join('\n')}\n  </disks>\n</domaincheckpoint>\n`
  );
}

/** A disk of a checkpoint, as checkpoint-dumpxml shows it. */
export interface CheckpointDisk {
  readonly name: string;
  /** bitmap or no. */
  readonly checkpoint: string;
  /** The bitmap's name in the image (libvirt names it after the checkpoint). */
  readonly bitmap: string | undefined;
  /** Bytes changed since the checkpoint (only with the SIZE flag, on a running domain). */
  readonly size: number | undefined;
}

/**
 * The checkpoint's own disks (`<domaincheckpoint><disks><disk …/>`), not
 * those of the `<domain>` copy the full XML carries.
 */
export function parseCheckpointDisks(xml: string): CheckpointDisk[] {
  const own = strip(xml, 'domain');
  const m = /<disks(\s[^>]*)?>([\s\S]*?)<\/disks>/.exec(own);
  if (!m) return [];
  return [...m[2]!.matchAll(/<disk(\s[^>]*?)\/?>/g)].flatMap((d) => {
    const a = attributes(d[1] ?? '');
    if (a['name'] === undefined) return [];
    const size = a['size'] !== undefined ? Number(a['size']) : undefined;
    return [
      {
        name: a['name'],
        checkpoint: a['checkpoint'] ?? 'bitmap',
        bitmap: a['bitmap'],
        size: size !== undefined && Number.isFinite(size) ? size : undefined,
      },
    ];
  });
}

/**
 * `<domainsnapshot>` of external disk-only overlays (qcow2, created by
 * libvirt) for the picked disks; every other disk snapshot='no'.
 */
export function snapshotXml(name: string, all: readonly DomainDisk[], picked: readonly PickedDisk[]): string {
  const lines = all.map((d) => {
    const p = picked.find((x) => x.disk.name === d.name);
    if (!p) return `    <disk name='${escapeXml(d.name)}' snapshot='no'/>`;
    return (
      `    <disk name='${escapeXml(d.name)}' snapshot='external' type='file'>` +
      `<source file='${escapeXml(p.target)}'/><driver type='qcow2'/></disk>`
    );
  });
  return (
    `<domainsnapshot>\n  <name>${escapeXml(name)}</name>\n  <description>quiesce: filesystems frozen by the guest agent</description>\n` +
    `  <disks>\n${lines.join('\n')}\n  </disks>\n</domainsnapshot>\n`
  );
}

/**
 * A checkpoint's XML for a redefine when its parent may be gone: without the
 * `<parent>` element (quiesce deletes each base's checkpoint once a newer
 * backup replaces it, so a saved checkpoint's parent usually no longer exists).
 */
export function withoutParent(checkpointXml: string): string {
  const inner = /<domain[\s>]/.exec(checkpointXml);
  const head = inner ? checkpointXml.slice(0, inner.index) : checkpointXml;
  const tail = inner ? checkpointXml.slice(inner.index) : '';
  return strip(head, 'parent').replace(/\n\s*\n/g, '\n') + tail;
}
