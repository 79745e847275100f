package access

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// OwnerOfFile is the owner and permission bits of the open file fd, as
// the kernel would check them for an open(2) of it.
func OwnerOfFile(fd int) (Owner, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Owner{}, fmt.Errorf("fstat: %w", err)
	}
	return Owner{UID: st.Uid, GID: st.Gid, Mode: st.Mode & 0o777}, nil
}
