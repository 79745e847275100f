// Package fusefs exposes mapped devices as regular files in a FUSE mount,
// the daxsnap counterpart of /dev/mapper/NAME on a machine without
// device-mapper: `losetup` attaches a file and kernel file systems
// (mkfs, mount, fsck) run on the loop device.
//
// # Layout
//
// The mount is one read-only directory. Each entry is a device, named as
// the device, sized as its live table (0 without one), owned and
// permitted as Options.Owner says (root, 0600 by default; write bits
// cleared for a read-only device). Nothing is cached by the kernel
// (entry, attribute and negative timeouts are 0), so every lookup goes to
// the device manager: devices created, removed, renamed or resized after
// the mount show at once. A loop device reads its file's size only when
// attached or told (`losetup -c`); the watcher (Options.Poll) refreshes the
// kernel's size of a device whose table changed size, so `losetup -c`
// sees it.
//
// # Files
//
// Opening a file is an open of the device (Options.Open; dm.Device.Open
// by default) until the kernel releases the file, so removing a device
// attached to a loop device is refused as busy, as it is for a device
// exported over NBD. The kernel releases a file shortly after its last
// close, not during it: the open count drops a moment after `losetup -d`.
// Opening a read-only device for writing fails with EROFS (losetup then
// attaches it read-only by itself); O_TRUNC is ignored and ftruncate to
// another size fails with EINVAL, as for a block device.
//
// Files are opened FOPEN_DIRECT_IO (with parallel direct writes): no
// page cache sits between a reader and the device, so what NBD clients,
// DAX mappings and snapshot merges change is seen at the next read, and a
// loop device above does not cache the data twice. Reads at or past the
// end return 0 bytes and reads across it are short, as for any file;
// writes past the end fail with ENOSPC and writes across it are short, as
// for a block device (a device file cannot grow). fsync is Flush; close
// flushes too if the file was written through since its last flush.
//
// A read of memory the device maps (a DAX-capable line: dm.Device.LendRead
// through the Backend, a dm.Lender) is answered from that memory itself,
// without a copy into the request's buffer: the device's I/O stays
// admitted until the reply is written, so a suspend or table swap waits
// for it as for any read under way.
//
// fallocate: PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE (with or without
// KEEP_SIZE) make the range read back as zeroes (WriteZeroes, falling
// back to writing zeroes); both need the range inside the device (EINVAL
// otherwise, as blkdev_fallocate; KEEP_SIZE clips a range that runs
// past the end). A punched hole must read back as zeroes: the loop
// driver sends the write-zeroes requests of the file system above it as
// PUNCH_HOLE, and Discard does not promise zeroes (a snapshot's may keep
// the data). Other modes fail with EOPNOTSUPP.
//
// # Errors
//
// errnoOf is the one place device errors become errno, by the class
// dm.Errno gives them, narrowed for files: dm.ErrReadOnly is EROFS,
// ErrOutOfRange ENOSPC (EINVAL for fallocate), a device with no table
// ENXIO, and anything the kernel would misread (ENOSYS disables an
// operation for the whole mount) EIO. A suspended device's I/O waits
// until it is resumed, as block I/O does.
package fusefs
