package backing

import (
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// OpenMemoryAs maps the regular file at path as a memory device of kind,
// with the given flush behaviour, whatever the file really is. Tests use it
// to run the sync-media and devdax code paths on tmpfs memory.
func OpenMemoryAs(path string, kind Kind, sync, file, readOnly bool) (Device, error) {
	opts := Options{ReadOnly: readOnly}
	f, st, err := openNode(path, opts, unix.S_IFREG)
	if err != nil {
		return nil, err
	}
	mem, _, err := mapShared(int(f.Fd()), st.Size, mapping{readOnly: readOnly})
	if err != nil {
		f.Close()
		return nil, err
	}
	caps := DAX
	if sync {
		caps |= Sync
	}
	p := props{path: path, id: idOf(st), kind: kind, size: st.Size, lbs: 512, caps: caps, ro: readOnly}
	return &memory{base: base{props: p}, f: f, fd: int(f.Fd()), mem: mem, pageSize: 4096, sync: sync, file: file}, nil
}

// CountMsync counts the msync calls of memory devices until t ends.
func CountMsync(t testing.TB) *atomic.Int64 {
	var n atomic.Int64
	was := msync
	msync = func(b []byte) error { n.Add(1); return was(b) }
	t.Cleanup(func() { msync = was })
	return &n
}
