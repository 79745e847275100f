package backingtest

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// checkMappingSource maps the device's file the way a client process
// would and checks that the client's view and the device are one memory.
func checkMappingSource(dev backing.Device) error {
	ms := dev.(backing.MappingSource)
	ps := ms.PageSize()
	fd, foff := ms.MapFile()
	if ps < 4096 || ps&(ps-1) != 0 || foff < 0 || foff%ps != 0 {
		return fmt.Errorf("PageSize %d and MapFile offset %d: want a power of two ≥ 4096 and an offset that is a multiple", ps, foff)
	}
	size := dev.Size()
	length := (size + ps - 1) / ps * ps
	prot := unix.PROT_READ | unix.PROT_WRITE
	if dev.ReadOnly() {
		prot = unix.PROT_READ
	}
	view, err := unix.Mmap(int(fd), foff, int(length), prot, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap of MapFile (fd %d, offset %d, %d bytes) as a client would: %w", fd, foff, length, err)
	}
	defer unix.Munmap(view)
	view = view[:size]
	m, err := newModel(dev)
	if err != nil {
		return err
	}
	if err := m.compare("client mapping", view, 0); err != nil || dev.ReadOnly() {
		return err
	}
	n := min(size, 5000)
	if err := m.apply(op{kind: opWrite, off: size - n, n: n, seed: 11}); err != nil {
		return err
	}
	if err := m.compare("client mapping after WriteAt", view, 0); err != nil {
		return err
	}
	data := pattern(12, n)
	copy(view, data) // a client's store
	copy(m.ref, data)
	return m.verify()
}
