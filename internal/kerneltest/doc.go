// Package kerneltest boots Debian's real Linux kernel in qemu with a minimal
// busybox initramfs, runs a shell script in the guest and returns what it
// printed. It is the harness of the kernel interop tier: tests use it to
// check daxsnap's on-disk formats against the kernel's own device mapper
// (dm-snapshot's persistent COW format in both directions) and to record
// the kernel's behaviour that daxsnap improves on (DAX and snapshot-origin).
//
// It is meant to be used from tests only. What it needs on the host:
//
//   - qemu-system-x86_64 (Debian package qemu-system-x86);
//   - a Debian kernel image /boot/vmlinuz-VERSION with its modules under
//     /lib/modules/VERSION (linux-image-amd64);
//   - /bin/busybox from busybox-static (a static binary: the initramfs needs
//     no C library for it);
//   - dmsetup (package dmsetup); it is dynamically linked, so its shared
//     libraries and the ELF interpreter are found with debug/elf and copied
//     into the initramfs.
//
// Require skips the calling test with the reason (or fails it when
// DAXSNAP_STRICT=1) when any of these is missing. The initramfs is written
// in cpio "newc" format by this package, so no cpio tool is needed;
// compressed modules (.ko.xz, .ko.zst, .ko.gz) are decompressed with xz,
// zstd or compress/gzip.
//
// The tier's tests live in this package:
//
//	go test ./internal/kerneltest                 # all of it (about 30 s under TCG)
//	go test ./internal/kerneltest -run TestKernel -v  # the boots, with the guests' output
//
// TestKernelWritesDaxsnapReads (the kernel fills a COW device, daxsnap
// loads it), TestKernelReadsDaxsnapWrites (daxsnap fills COW devices, the
// kernel reads the snapshots: several areas, 64 KiB chunks, the kernel
// appending to daxsnap's store), TestKernelSeedDAX (the kernel refuses to
// reload a live DAX device with snapshot-origin), TestKernelDmsetupGolden
// (records what the kernel's dmsetup prints for a scenario of verbs into
// testdata/dmsetup, which cmd/daxsnap's TestGolden_dmsetup holds daxsnap
// to; -update-dmsetup rewrites the files) and TestKernelBoot (the
// harness itself). Each boot is one qemu run of a few seconds.
//
// KVM is used when /dev/kvm can be opened and the CPU advertises vmx or svm;
// a KVM boot that dies before the guest's init runs is retried once under
// TCG. DAXSNAP_KERNELTEST_ACCEL=tcg or =kvm forces the accelerator, and
// DAXSNAP_KERNELTEST_TIMEOUT (a Go duration) overrides the per-boot timeout.
package kerneltest
