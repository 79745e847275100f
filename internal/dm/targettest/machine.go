package targettest

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// blockDev is what both a dm.Target and a *dm.Device offer for block I/O.
type blockDev interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Discard(off, n int64) error
	WriteZeroes(off, n int64) error
}

// machine is the rapid state machine: random operations on dev and on the
// model, with the devices compared to the model's images after each one.
type machine struct {
	dev    blockDev
	da     func(off, n int64) ([]byte, error) // nil: direct access not exercised
	model  Model
	rig    *rig
	size   int64 // bytes
	bounds bool  // dev checks bounds (a mapped device): try out-of-range I/O
}

// maxIO bounds one operation so that a run stays fast yet crosses chunk
// and line boundaries.
const maxIO = 16 << 10

func (m *machine) actions() map[string]func(*rapid.T) {
	a := map[string]func(*rapid.T){
		"":             func(t *rapid.T) { m.rig.compare(t) },
		"read":         m.read,
		"write":        m.write,
		"discard":      m.discard,
		"write-zeroes": m.writeZeroes,
		"flush":        m.flush,
	}
	if m.da != nil {
		a["direct-access"] = m.directAccess
	}
	if m.bounds {
		a["out-of-range"] = m.outOfRange
	}
	return a
}

func drawSpan(t *rapid.T, size int64) (off, n int64) {
	if rapid.Bool().Draw(t, "sector-aligned") {
		sectors := size / dm.SectorSize
		s := rapid.Int64Range(0, sectors-1).Draw(t, "sector")
		k := rapid.Int64Range(1, min(sectors-s, maxIO/dm.SectorSize)).Draw(t, "sectors")
		return s * dm.SectorSize, k * dm.SectorSize
	}
	off = rapid.Int64Range(0, size-1).Draw(t, "off")
	n = rapid.Int64Range(1, min(size-off, maxIO)).Draw(t, "len")
	return off, n
}

func drawData(t *rapid.T, n int64) []byte {
	p := make([]byte, n)
	fill(rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "data"), 1)), p)
	return p
}

// mismatch describes how got fails to match the model's want, or "".
func mismatch(got, want error) string {
	switch {
	case want == nil && got != nil:
		return fmt.Sprintf("failed (%v), the model says it succeeds", got)
	case want != nil && got == nil:
		return fmt.Sprintf("succeeded, the model says it fails with %v", want)
	case want != nil && !errors.Is(got, want):
		return fmt.Sprintf("error %q does not wrap the model's %q", got, want)
	}
	return ""
}

// sameErr fails t on a mismatch and reports whether the operation succeeded.
func sameErr(t *rapid.T, op string, got, want error) bool {
	if s := mismatch(got, want); s != "" {
		t.Fatalf("%s %s", op, s)
	}
	return got == nil
}

func (m *machine) read(t *rapid.T) {
	off, n := drawSpan(t, m.size)
	got, want := make([]byte, n), make([]byte, n)
	k, err := m.dev.ReadAt(got, off)
	op := fmt.Sprintf("ReadAt(%d bytes at %d)", n, off)
	if !sameErr(t, op, err, m.model.ReadAt(want, off)) {
		return
	}
	if int64(k) != n {
		t.Fatalf("%s returned %d bytes without an error", op, k)
	}
	if j := firstDiff(got, want); j >= 0 {
		t.Fatalf("%s: byte %d (offset %d) is %#02x, the model says %#02x", op, j, off+int64(j), got[j], want[j])
	}
}

func (m *machine) write(t *rapid.T) {
	off, n := drawSpan(t, m.size)
	p := drawData(t, n)
	k, err := m.dev.WriteAt(p, off)
	op := fmt.Sprintf("WriteAt(%d bytes at %d)", n, off)
	if sameErr(t, op, err, m.model.WriteAt(p, off)) && int64(k) != n {
		t.Fatalf("%s returned %d bytes without an error", op, k)
	}
}

func (m *machine) discard(t *rapid.T) {
	off, n := drawSpan(t, m.size)
	sameErr(t, fmt.Sprintf("Discard(%d, %d)", off, n), m.dev.Discard(off, n), m.model.Discard(off, n))
}

func (m *machine) writeZeroes(t *rapid.T) {
	off, n := drawSpan(t, m.size)
	sameErr(t, fmt.Sprintf("WriteZeroes(%d, %d)", off, n), m.dev.WriteZeroes(off, n), m.model.WriteZeroes(off, n))
}

func (m *machine) flush(t *rapid.T) {
	before := make([]int64, len(m.rig.mems))
	for i, d := range m.rig.mems {
		before[i] = d.Flushes.Load()
	}
	err := m.dev.Flush()
	devs, want := m.model.Flush()
	sameErr(t, "Flush()", err, want)
	for _, i := range devs {
		if d := m.rig.mems[i]; d.Flushes.Load() == before[i] {
			t.Fatalf("Flush() did not reach device %s", d.Path())
		}
	}
}

// directAccess checks that the memory handed out reads as the model says,
// then stores through it as a DAX client would; the invariant check then
// sees whether the stores landed where the model put them.
func (m *machine) directAccess(t *rapid.T) {
	off, n := drawSpan(t, m.size)
	mem, err := m.da(off, n)
	wantLen, werr := m.model.DirectAccess(off, n)
	op := fmt.Sprintf("DirectAccess(%d, %d)", off, n)
	if !sameErr(t, op, err, werr) {
		return
	}
	if int64(len(mem)) != wantLen {
		t.Fatalf("%s returned %d bytes, the model says %d", op, len(mem), wantLen)
	}
	want := make([]byte, wantLen)
	if err := m.model.ReadAt(want, off); err != nil {
		t.Fatalf("%s succeeded where the model cannot read: %v", op, err)
	}
	if j := firstDiff(mem, want); j >= 0 {
		t.Fatalf("%s: byte %d (offset %d) is %#02x, the model says %#02x", op, j, off+int64(j), mem[j], want[j])
	}
	p := drawData(t, wantLen)
	copy(mem, p)
	if err := m.model.WriteAt(p, off); err != nil {
		t.Fatalf("%s: the model cannot write what was stored: %v", op, err)
	}
}

// outOfRange checks that a mapped device refuses I/O reaching past its end
// and changes nothing (the invariant check sees any change).
func (m *machine) outOfRange(t *rapid.T) {
	off := rapid.Int64Range(max(0, m.size-maxIO), m.size+maxIO).Draw(t, "off")
	n := rapid.Int64Range(max(1, m.size-off+1), max(1, m.size-off)+maxIO).Draw(t, "len")
	var err error
	switch op := rapid.IntRange(0, 3).Draw(t, "op"); op {
	case 0:
		_, err = m.dev.ReadAt(make([]byte, n), off)
	case 1:
		_, err = m.dev.WriteAt(make([]byte, n), off)
	case 2:
		err = m.dev.Discard(off, n)
	case 3:
		err = m.dev.WriteZeroes(off, n)
	}
	if !errors.Is(err, dm.ErrOutOfRange) {
		t.Fatalf("I/O of %d bytes at %d on a %d-byte device: got %v, want %v", n, off, m.size, err, dm.ErrOutOfRange)
	}
}
