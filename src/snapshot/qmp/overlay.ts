import type { Log } from '../../log/logger.js';
import type { PlannedQmpSnapshot, SnapshotContext, SnapshotProvider, SnapshotTaken } from '../types.js';
import { runName } from './disks.js';
import { QmpSession } from './session.js';

/**
 * Mode `snapshot`: one `transaction` of `blockdev-snapshot-sync` (atomic
 * external qcow2 overlays; the images below them are the point in time).
 * Before the freeze each overlay file is reserved (created empty, never
 * overwriting); QEMU formats it inside the window.
 */
export function overlayProvider(s: PlannedQmpSnapshot): SnapshotProvider {
  return new QmpOverlay(s);
}

class QmpOverlay implements SnapshotProvider {
  private preparing: Promise<QmpSession> | undefined;
  private disposing: Promise<void> | undefined;
  /** Set as soon as connected, so that dispose() undoes whatever a failed prepare() got to. */
  private session: QmpSession | undefined;

  constructor(private readonly s: PlannedQmpSnapshot) {}

  describe(): string {
    const s = this.s;
    const disks = s.disks === 'all' ? 'all disks' : s.disks.join(', ');
    return `QMP unix:${s.socket}: one transaction of blockdev-snapshot-sync of ${disks} → ${s.target} (qcow2 overlays)`;
  }

  planSteps(): { beforeFreeze: string } {
    return {
      beforeFreeze: `snapshot set-up: connect to QMP, resolve the disks, reserve each overlay file (never overwriting)`,
    };
  }

  async prepare(ctx: { readonly guest: string }): Promise<void> {
    await this.prepared(ctx.guest);
  }

  private prepared(guest: string): Promise<QmpSession> {
    this.preparing ??= this.open(guest);
    return this.preparing;
  }

  private async open(guest: string): Promise<QmpSession> {
    const session = await QmpSession.open(this.s, guest, {
      // An overlay goes on top of what the guest writes to: a device or its top node.
      anyNode: false,
      transaction: (disks) => ({
        actions: disks.map((d) => ({
          type: 'blockdev-snapshot-sync',
          data: {
            'node-name': d.node,
            'snapshot-file': d.target,
            'snapshot-node-name': runName(d, 'overlay'),
            format: 'qcow2',
            mode: 'absolute-paths',
          },
        })),
      }),
    });
    this.session = session;
    for (const d of session.disks) await session.reserve(d);
    return session;
  }

  async take(ctx: SnapshotContext): Promise<SnapshotTaken> {
    const session = await this.prepared(ctx.guest);
    await session.take(ctx.signal);
    // QEMU switched the devices to the overlays: the snapshot is whole once the transaction is accepted.
    session.finish();
    return { files: session.targets };
  }

  dispose(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    this.disposing ??= this.close(ctx);
    return this.disposing;
  }

  private async close(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    const session = this.session;
    if (!session) return;
    await session.dispose(ctx, async (accepted, warn) => {
      if (accepted === false) return;
      // QEMU took (or may still take) the overlays after the window was cut short: they are live now.
      warn(
        `the overlays ${session.targets.join(', ')} ${accepted ? 'were' : 'may have been'} created after the frozen window was cut short: the images below them are not frozen-consistent`,
      );
      session.keepFiles();
    });
  }
}
