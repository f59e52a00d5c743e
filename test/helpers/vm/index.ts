// The real-guest test helpers: a TCG guest with either agent (qemu.ts), its boot files (initramfs.ts),
// a QMP client (qmp.ts), things done through its agent (guest-ops.ts: exec, checksums, writer pause),
// its disks from the host (disks.ts: hot-add, checksums of an image). The same guest under libvirtd: ../libvirt.ts.
export * from './disks.js';
export * from './guest-ops.js';
export * from './initramfs.js';
export * from './qemu.js';
export * from './qmp.js';
