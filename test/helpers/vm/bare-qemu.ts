import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { DATA_DEVICE, DATA_FILE_NODE, DATA_NODE, makeDataImage, QEMU } from './qemu.js';

/**
 * A QEMU that never runs guest code (`-S`, no kernel): the test guest's block
 * layout (data disk as `file0`/`data0`, device `vda`, plus optional extra
 * disks) and a QMP socket, for QMP block-layer tests that need no boot.
 */
export interface BareQemu {
  readonly dir: string;
  readonly qmpSocket: string;
  /** A second monitor, for a test to act while the code under test holds the first. */
  readonly qmpSocket2: string;
  readonly dataImage: string;
  readonly pid: number;
  running(): boolean;
  stop(): Promise<void>;
}

/** Started and not stopped yet: killed when the test process exits without stopping them. */
const live = new Map<string, () => void>();
process.once('exit', () => {
  for (const kill of live.values()) kill();
});

export function bareQemuUnavailable(): string | undefined {
  if (!existsSync(QEMU)) return `no ${QEMU} (qemu-system-x86)`;
  if (!existsSync('/usr/sbin/mkfs.ext4')) return 'no mkfs.ext4 (e2fsprogs)';
  return undefined;
}

/** Starts it; `extraDisks` adds raw disks `extraN` (node `xdataN`, device `vdN`). Stop it in an after hook. */
export async function startBareQemu(
  opts: {
    dataDiskMB?: number;
    extraDisks?: number;
    dataFormat?: 'raw' | 'qcow2';
    /** The data image to use (made if missing) and keep after stop(): a restarted QEMU finds it as it was left. */
    dataImage?: string;
    /**
     * Reads of the data disk limited to this many bytes per second: a throttle filter node
     * (`throttle0`) between the format node and the device, so that a copy takes its time.
     */
    readBytesPerSec?: number;
  } = {},
): Promise<BareQemu> {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-bareqemu-'));
  const qmpSocket = join(dir, 'qmp.sock');
  const qmpSocket2 = join(dir, 'qmp2.sock');
  const format = opts.dataFormat ?? 'raw';
  const dataImage = opts.dataImage ?? join(dir, format === 'qcow2' ? 'data.qcow2' : 'data.img');
  const pidFile = join(dir, 'qemu.pid');
  let pid: number | undefined;
  const running = (): boolean => {
    if (pid === undefined) return false;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      return cmd.includes(dir) && !/\) Z /.test(stat);
    } catch {
      return false;
    }
  };
  const stop = async (): Promise<void> => {
    if (pid !== undefined && running()) {
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 50 && running(); i++) await sleep(100);
      if (running()) process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 50 && running(); i++) await sleep(100);
    }
    rmSync(dir, { recursive: true, force: true });
    live.delete(dir);
  };
  live.set(dir, () => {
    if (running()) process.kill(pid!, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  try {
    if (existsSync(dataImage)) {
      // Given and already there: reused as it is.
    } else if (format === 'qcow2') {
      // Persistent dirty bitmaps live in a qcow2 (v3) image.
      const raw = join(dir, 'data.raw');
      makeDataImage(raw, opts.dataDiskMB ?? 64);
      await promisify(execFile)('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, dataImage]);
      rmSync(raw);
    } else makeDataImage(dataImage, opts.dataDiskMB ?? 64);
    const extra: string[] = [];
    for (let i = 1; i <= (opts.extraDisks ?? 0); i++) {
      const img = join(dir, `extra${i}.img`);
      makeDataImage(img, 16);
      extra.push(
        '-blockdev', `driver=file,filename=${img},node-name=xfile${i}`,
        '-blockdev', `driver=raw,file=xfile${i},node-name=xdata${i}`,
        '-device', `virtio-blk-pci,drive=xdata${i},id=vd${i}`,
      ); // prettier-ignore
    }
    await promisify(execFile)(
      QEMU,
      [
        '-S', '-accel', 'tcg', '-m', '64', '-nodefaults', '-display', 'none',
        '-blockdev', `driver=file,filename=${dataImage},node-name=${DATA_FILE_NODE}`,
        '-blockdev', `driver=${format},file=${DATA_FILE_NODE},node-name=${DATA_NODE}`,
        ...(opts.readBytesPerSec
          ? [
              '-object', `throttle-group,id=tg0,x-bps-read=${opts.readBytesPerSec}`,
              '-blockdev', `driver=throttle,throttle-group=tg0,file=${DATA_NODE},node-name=throttle0`,
              '-device', `virtio-blk-pci,drive=throttle0,id=${DATA_DEVICE}`,
            ]
          : ['-device', `virtio-blk-pci,drive=${DATA_NODE},id=${DATA_DEVICE}`]),
        ...extra,
        '-qmp', `unix:${qmpSocket},server=on,wait=off`,
        '-qmp', `unix:${qmpSocket2},server=on,wait=off`,
        '-pidfile', pidFile, '-daemonize',
      ], // prettier-ignore
      { timeout: 30_000 },
    );
    pid = Number(readFileSync(pidFile, 'utf8').trim());
    return { dir, qmpSocket, qmpSocket2, dataImage, pid, running, stop };
  } catch (err) {
    if (existsSync(pidFile)) pid = Number(readFileSync(pidFile, 'utf8').trim());
    await stop();
    throw err;
  }
}
