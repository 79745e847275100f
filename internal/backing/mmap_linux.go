package backing

import (
	"errors"
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// mapping is how mapShared maps.
type mapping struct {
	readOnly bool // PROT_READ only
	// trySync first asks for MAP_SYNC through MAP_SHARED_VALIDATE, so that
	// a file or kernel that cannot honour the flag refuses it (EOPNOTSUPP;
	// EINVAL before Linux 4.15) instead of ignoring it.
	trySync bool
}

// mapShared maps size bytes of fd from offset 0, shared, as how says, and
// reports whether MAP_SYNC was granted.
func mapShared(fd int, size int64, how mapping) (mem []byte, synced bool, err error) {
	if size <= 0 || size > math.MaxInt {
		return nil, false, fmt.Errorf("cannot map %d bytes", size)
	}
	prot := unix.PROT_READ | unix.PROT_WRITE
	if how.readOnly {
		prot = unix.PROT_READ
	}
	if how.trySync {
		mem, err = unix.Mmap(fd, 0, int(size), prot, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC)
		if err == nil {
			return mem, true, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return nil, false, fmt.Errorf("mmap MAP_SYNC of %d bytes: %w", size, err)
		}
	}
	mem, err = unix.Mmap(fd, 0, int(size), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, false, fmt.Errorf("mmap of %d bytes: %w", size, err)
	}
	return mem, false, nil
}
