package backingtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// opKind is one operation of the reference-model check.
type opKind string

const (
	opRead        opKind = "ReadAt"
	opWrite       opKind = "WriteAt"
	opDiscard     opKind = "Discard"
	opWriteZeroes opKind = "WriteZeroes"
	opFlush       opKind = "Flush"
	opFlushRange  opKind = "FlushRange"
	opDirectRead  opKind = "DirectAccess-read"
	opDirectWrite opKind = "DirectAccess-write"
)

type op struct {
	kind   opKind
	off, n int64
	seed   uint64 // contents of a write
}

func (o op) String() string { return fmt.Sprintf("%s(off=%d, n=%d)", o.kind, o.off, o.n) }

// model mirrors a device in a plain byte slice: every operation is applied
// to both, and every read must match the slice.
type model struct {
	dev backing.Device
	ref []byte
	da  backing.DirectAccesser // nil unless the device has the DAX capability
}

func newModel(dev backing.Device) (*model, error) {
	m := &model{dev: dev, ref: make([]byte, dev.Size())}
	if da, ok := dev.(backing.DirectAccesser); ok && dev.Capabilities().Has(backing.DAX) {
		m.da = da
	}
	return m, m.reload()
}

// reload takes the device's current contents as the reference.
func (m *model) reload() error {
	if n, err := m.dev.ReadAt(m.ref, 0); err != nil || n != len(m.ref) {
		return fmt.Errorf("ReadAt of the whole device (%d bytes) = %d, %v", len(m.ref), n, err)
	}
	return nil
}

// kinds lists the operations that apply to the device.
func (m *model) kinds() []opKind {
	k := []opKind{opRead, opWrite, opDiscard, opWriteZeroes, opFlush}
	if m.da != nil {
		k = append(k, opFlushRange, opDirectRead)
		if !m.dev.ReadOnly() { // a read-only mapping faults on a store
			k = append(k, opDirectWrite)
		}
	}
	return k
}

// pattern returns n bytes determined by seed.
func pattern(seed uint64, n int64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// apply runs o on the device and the reference and checks the outcome.
func (m *model) apply(o op) error {
	var err error
	switch o.kind {
	case opRead:
		got := make([]byte, o.n)
		var n int
		if n, err = m.dev.ReadAt(got, o.off); err == nil && n != len(got) {
			return fmt.Errorf("%v read %d bytes and no error", o, n)
		}
		if err == nil {
			return m.compare(o, got, o.off)
		}
	case opWrite:
		data := pattern(o.seed, o.n)
		var n int
		n, err = m.dev.WriteAt(data, o.off)
		if err == nil && n != len(data) {
			return fmt.Errorf("%v wrote %d bytes and no error", o, n)
		}
		return m.mutated(o, err, func() { copy(m.ref[o.off:], data) })
	case opDiscard, opWriteZeroes:
		if o.kind == opDiscard {
			err = m.dev.Discard(o.off, o.n)
		} else {
			err = m.dev.WriteZeroes(o.off, o.n)
		}
		return m.mutated(o, err, func() { clear(m.ref[o.off : o.off+o.n]) })
	case opFlush:
		err = m.dev.Flush()
	case opFlushRange:
		err = m.da.FlushRange(o.off, o.n)
	case opDirectRead, opDirectWrite:
		return m.direct(o)
	}
	if err != nil {
		return fmt.Errorf("%v: %w", o, err)
	}
	return nil
}

// mutated checks the result of a modifying operation: refused on a
// read-only device, else applied to the reference.
func (m *model) mutated(o op, err error, apply func()) error {
	if m.dev.ReadOnly() {
		return refusedReadOnly(m.dev, o.String(), err)
	}
	if err != nil {
		return fmt.Errorf("%v: %w", o, err)
	}
	apply()
	return nil
}

func (m *model) direct(o op) error {
	b, err := m.da.DirectAccess(o.off, o.n)
	if err != nil {
		return fmt.Errorf("%v: %w", o, err)
	}
	if int64(len(b)) != o.n || int64(cap(b)) != o.n {
		return fmt.Errorf("%v returned len %d cap %d, want both %d", o, len(b), cap(b), o.n)
	}
	if o.kind == opDirectRead {
		return m.compare(o, b, o.off)
	}
	data := pattern(o.seed, o.n)
	copy(b, data)
	copy(m.ref[o.off:], data)
	return nil
}

// compare checks got against the reference at off.
func (m *model) compare(what any, got []byte, off int64) error {
	want := m.ref[off : off+int64(len(got))]
	if bytes.Equal(got, want) {
		return nil
	}
	i := 0
	for got[i] == want[i] {
		i++
	}
	return fmt.Errorf("%v: byte at offset %d is %#02x, the reference model has %#02x", what, off+int64(i), got[i], want[i])
}

// verify compares the whole device with the reference.
func (m *model) verify() error {
	got := make([]byte, len(m.ref))
	if n, err := m.dev.ReadAt(got, 0); err != nil || n != len(got) {
		return fmt.Errorf("ReadAt of the whole device = %d, %v", n, err)
	}
	return m.compare("whole-device check", got, 0)
}

// refusedReadOnly checks that a write to a read-only device failed with
// EROFS and an error naming the device.
func refusedReadOnly(dev backing.Device, what string, err error) error {
	switch {
	case err == nil:
		return fmt.Errorf("%s succeeded on a read-only device", what)
	case !errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%s on a read-only device: got %v, want an error wrapping EROFS", what, err)
	case !strings.Contains(err.Error(), dev.Path()):
		return fmt.Errorf("%s on a read-only device: error %q does not name %s", what, err, dev.Path())
	}
	return nil
}
