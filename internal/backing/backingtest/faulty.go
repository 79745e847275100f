package backingtest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Op is a set of device operations that a Fault makes fail.
type Op uint8

const (
	OpRead Op = 1 << iota
	OpWrite
	OpFlush // Flush and FlushRange
	OpDiscard
	OpWriteZeroes
	OpAll = OpRead | OpWrite | OpFlush | OpDiscard | OpWriteZeroes
)

func (o Op) String() string {
	var names []string
	for i, name := range []string{"read", "write", "flush", "discard", "write zeroes"} {
		if o&(1<<i) != 0 {
			names = append(names, name)
		}
	}
	return strings.Join(names, "|")
}

// Fault selects operations that fail with EIO.
type Fault struct {
	Ops Op
	// Off and Len select the bytes whose operations fail: an operation
	// fails if it touches [Off, Off+Len). Len 0 means to the end of the
	// device. Flush has no range and fails whenever Ops has OpFlush.
	Off, Len int64
	// Times is how many operations fail before the fault heals by itself;
	// 0 means every matching operation until Heal.
	Times int
}

// Faulty wraps a device and fails chosen operations with EIO, leaving the
// device untouched by them (pebble's errorfs, dm-flakey). Operations no
// fault matches go through. DirectAccess never fails: memory has no EIO.
type Faulty struct {
	backing.Device
	mu       sync.Mutex
	faults   []Fault
	injected atomic.Int64
}

// NewFaulty wraps dev; it fails nothing until Inject.
func NewFaulty(dev backing.Device) *Faulty { return &Faulty{Device: dev} }

// Inject adds a fault; faults accumulate until Heal.
func (f *Faulty) Inject(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fault)
}

// Heal removes every fault.
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// Injected counts the operations failed so far.
func (f *Faulty) Injected() int64 { return f.injected.Load() }

// fail returns the injected error if a fault matches op on [off, off+n);
// every OpFlush fault matches a flush, whatever its range.
func (f *Faulty) fail(op Op, off, n int64) error {
	ranged := op != OpFlush
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.faults {
		ft := &f.faults[i]
		if ft.Ops&op == 0 || ranged && !overlaps(off, max(n, 1), ft.Off, ft.Len) {
			continue
		}
		if ft.Times > 0 {
			if ft.Times--; ft.Times == 0 {
				f.faults = append(f.faults[:i], f.faults[i+1:]...)
			}
		}
		f.injected.Add(1)
		return fmt.Errorf("backingtest: injected fault: %s of %d bytes at offset %d on %s: %w", op, n, off, f.Path(), syscall.EIO)
	}
	return nil
}

// overlaps reports whether [off, off+n) meets [foff, foff+flen) (flen 0:
// to the end).
func overlaps(off, n, foff, flen int64) bool {
	return off+n > foff && (flen == 0 || off < foff+flen)
}

func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fail(OpRead, off, int64(len(p))); err != nil {
		return 0, err
	}
	return f.Device.ReadAt(p, off)
}

func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fail(OpWrite, off, int64(len(p))); err != nil {
		return 0, err
	}
	return f.Device.WriteAt(p, off)
}

func (f *Faulty) Flush() error {
	if err := f.fail(OpFlush, 0, 0); err != nil {
		return err
	}
	return f.Device.Flush()
}

func (f *Faulty) Discard(off, n int64) error {
	if err := f.fail(OpDiscard, off, n); err != nil {
		return err
	}
	return f.Device.Discard(off, n)
}

func (f *Faulty) WriteZeroes(off, n int64) error {
	if err := f.fail(OpWriteZeroes, off, n); err != nil {
		return err
	}
	return f.Device.WriteZeroes(off, n)
}

// DirectAccess forwards to the wrapped device; it fails if that device
// cannot give direct access.
func (f *Faulty) DirectAccess(off, n int64) ([]byte, error) {
	da, ok := f.Device.(backing.DirectAccesser)
	if !ok {
		return nil, fmt.Errorf("backingtest: %s (%s) is not DAX-capable", f.Path(), f.Kind())
	}
	return da.DirectAccess(off, n)
}

// FlushRange fails like Flush, else forwards to the wrapped device.
func (f *Faulty) FlushRange(off, n int64) error {
	da, ok := f.Device.(backing.DirectAccesser)
	if !ok {
		return fmt.Errorf("backingtest: %s (%s) is not DAX-capable", f.Path(), f.Kind())
	}
	if err := f.fail(OpFlush, off, n); err != nil {
		return err
	}
	return da.FlushRange(off, n)
}

var (
	_ backing.Device         = (*Faulty)(nil)
	_ backing.DirectAccesser = (*Faulty)(nil)
)
