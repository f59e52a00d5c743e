// The real-guest test helpers: a TCG guest with either agent (qemu.ts), its boot files (initramfs.ts),
// a QMP client (qmp.ts). The same guest under libvirtd: ../libvirt.ts.
export * from './initramfs.js';
export * from './qemu.js';
export * from './qmp.js';
