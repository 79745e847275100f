//go:build race

package backing

import "golang.org/x/sys/unix"

// filePread and filePwrite under the race detector go through package
// unix, whose calls tell the detector about the memory they read and
// write; the runtime's bookkeeping comes with them, and speed does not
// matter here.
func filePread(fd int, p []byte, off int64) (int, error) { return unix.Pread(fd, p, off) }

func filePwrite(fd int, p []byte, off int64) (int, error) { return unix.Pwrite(fd, p, off) }
