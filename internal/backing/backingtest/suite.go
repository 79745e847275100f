package backingtest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Run checks a backing.Device implementation against the contract every
// device must keep: a rapid property test of random reads, writes,
// discards, write-zeroes and flushes against a reference byte slice,
// out-of-range refusal, read-only refusal (when open returns a read-only
// device), direct access coherent with block I/O (for DAX devices), and
// failure of every operation after Close, also when Close races with I/O.
//
// open must return a newly opened device each call; its contents may be
// anything. Run closes every device it opens. Run the suite once on a
// writable and once on a read-only open to cover both.
func Run(t *testing.T, open func(t *testing.T) backing.Device) {
	first := open(t)
	ro, dax := first.ReadOnly(), first.Capabilities().Has(backing.DAX)
	_, isDA := first.(backing.DirectAccesser)
	_, isMS := first.(backing.MappingSource)
	t.Run("Properties", func(t *testing.T) {
		defer closeDevice(t, first)
		check(t, checkProperties(first))
	})
	t.Run("Model", func(t *testing.T) { testModel(t, open) })
	t.Run("OutOfRange", func(t *testing.T) { withDevice(t, open, checkOutOfRange) })
	if ro {
		t.Run("ReadOnly", func(t *testing.T) { withDevice(t, open, checkReadOnly) })
	}
	if dax {
		t.Run("DirectAccess", func(t *testing.T) { withDevice(t, open, checkDirectAccess) })
	} else if isDA {
		t.Run("DirectAccessWithoutDAX", func(t *testing.T) { withDevice(t, open, checkNoDirectAccess) })
	}
	if dax && isMS {
		t.Run("MappingSource", func(t *testing.T) { withDevice(t, open, checkMappingSource) })
	}
	t.Run("Close", func(t *testing.T) { check(t, checkClose(open(t))) })
	t.Run("ConcurrentClose", func(t *testing.T) { check(t, checkConcurrentClose(open(t))) })
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func withDevice(t *testing.T, open func(*testing.T) backing.Device, fn func(backing.Device) error) {
	t.Helper()
	dev := open(t)
	defer closeDevice(t, dev)
	check(t, fn(dev))
}

func closeDevice(t *testing.T, dev backing.Device) {
	t.Helper()
	if err := dev.Close(); err != nil {
		t.Errorf("Close %s: %v", dev.Path(), err)
	}
}

func checkProperties(dev backing.Device) error {
	var errs []error
	if dev.Path() == "" {
		errs = append(errs, errors.New("Path is empty"))
	}
	if dev.Size() <= 0 {
		errs = append(errs, fmt.Errorf("Size is %d", dev.Size()))
	}
	if lbs := dev.LogicalBlockSize(); lbs < 512 || lbs&(lbs-1) != 0 {
		errs = append(errs, fmt.Errorf("LogicalBlockSize %d is not a power of two ≥ 512", lbs))
	}
	caps := dev.Capabilities()
	if caps&^(backing.DAX|backing.Sync|backing.WPFault) != 0 {
		errs = append(errs, fmt.Errorf("Capabilities %#x has unknown bits", uint8(caps)))
	}
	if caps&(backing.Sync|backing.WPFault) != 0 && !caps.Has(backing.DAX) {
		errs = append(errs, fmt.Errorf("Capabilities %s: sync and wpfault are about mappings and need dax", caps))
	}
	if _, ok := dev.(backing.DirectAccesser); caps.Has(backing.DAX) && !ok {
		errs = append(errs, fmt.Errorf("Capabilities %s, but %T is not a DirectAccesser", caps, dev))
	}
	if dev.ID() != dev.ID() || dev.Kind().String() == "unknown device" {
		errs = append(errs, fmt.Errorf("ID %v or Kind %v unstable or unknown", dev.ID(), dev.Kind()))
	}
	return errors.Join(errs...)
}

// testModel runs random operation sequences against the reference model.
// The model reloads the device at the start of each sequence, so that a
// failed (and shrunk) sequence starts from what the device holds.
func testModel(t *testing.T, open func(*testing.T) backing.Device) {
	dev := open(t)
	defer closeDevice(t, dev)
	m, err := newModel(dev)
	check(t, err)
	grains := grainsOf(dev)
	kinds := m.kinds()
	rapid.Check(t, func(rt *rapid.T) {
		if err := m.reload(); err != nil {
			rt.Fatal(err)
		}
		steps := rapid.IntRange(1, 16).Draw(rt, "steps")
		for range steps {
			if err := m.apply(drawOp(rt, dev.Size(), kinds, grains)); err != nil {
				rt.Fatal(err)
			}
		}
		if err := m.verify(); err != nil {
			rt.Fatal(err)
		}
	})
}

// grainsOf lists the alignments worth drawing offsets and lengths from:
// unaligned, sectors, logical blocks, pages and the mapping page size.
func grainsOf(dev backing.Device) []int64 {
	g := []int64{1, 512, int64(dev.LogicalBlockSize()), 4096}
	if ms, ok := dev.(backing.MappingSource); ok {
		g = append(g, ms.PageSize())
	}
	slices.Sort(g)
	g = slices.Compact(g)
	for len(g) > 1 && g[len(g)-1] > dev.Size() {
		g = g[:len(g)-1]
	}
	return g
}

// maxTransfer bounds reads and writes; discards and zeroes span the device.
const maxTransfer = 256 << 10

func drawOp(t *rapid.T, size int64, kinds []opKind, grains []int64) op {
	o := op{kind: rapid.SampledFrom(kinds).Draw(t, "op")}
	if o.kind == opFlush {
		return o
	}
	limit := size
	if o.kind != opDiscard && o.kind != opWriteZeroes && o.kind != opFlushRange {
		limit = min(size, maxTransfer)
	}
	og := rapid.SampledFrom(grains).Draw(t, "offset grain")
	o.off = rapid.Int64Range(0, size/og).Draw(t, "offset units") * og
	if rapid.Bool().Draw(t, "from end") {
		o.off = size - o.off // the end of the device is where bugs hide
	}
	ng := rapid.SampledFrom(grains).Draw(t, "length grain")
	o.n = rapid.Int64Range(0, min(size-o.off, limit)/ng).Draw(t, "length units") * ng
	if o.kind == opWrite || o.kind == opDirectWrite {
		o.seed = rapid.Uint64().Draw(t, "seed")
	}
	return o
}

// checkOutOfRange checks that I/O outside the device fails with an error
// naming the offending numbers and changes nothing, and that empty I/O at
// the very end succeeds.
func checkOutOfRange(dev backing.Device) error {
	m, err := newModel(dev)
	if err != nil {
		return err
	}
	size := dev.Size()
	cases := [][2]int64{{size, 1}, {-1, 1}, {size - 1, 2}, {0, size + 1}, {1, math.MaxInt64},
		{math.MaxInt64, 1}, {math.MinInt64, 1}, {size + 4096, 0}, {-4096, 0}}
	var errs []error
	for _, c := range cases {
		for name, call := range rangeOps(dev, c[0], c[1]) {
			what := fmt.Sprintf("%s(off=%d, n=%d) on a device of %d bytes", name, c[0], c[1], size)
			err := call()
			switch {
			case err == nil:
				errs = append(errs, fmt.Errorf("%s succeeded", what))
			case dev.ReadOnly() && errors.Is(err, errReadOnlyExpected(name)):
			case !strings.Contains(err.Error(), fmt.Sprint(c[0])) || !strings.Contains(err.Error(), fmt.Sprint(size)):
				errs = append(errs, fmt.Errorf("%s: error %q does not name the offset and the size", what, err))
			}
		}
	}
	for name, call := range rangeOps(dev, size, 0) {
		if err := call(); err != nil && !(dev.ReadOnly() && errors.Is(err, errReadOnlyExpected(name))) {
			errs = append(errs, fmt.Errorf("%s of 0 bytes at the end (%d): %w", name, size, err))
		}
	}
	if err := m.verify(); err != nil {
		errs = append(errs, fmt.Errorf("refused I/O changed the device: %w", err))
	}
	return errors.Join(errs...)
}

// rangeOps returns the device's ranged operations on [off, off+n).
func rangeOps(dev backing.Device, off, n int64) map[string]func() error {
	ops := map[string]func() error{
		"Discard":     func() error { return dev.Discard(off, n) },
		"WriteZeroes": func() error { return dev.WriteZeroes(off, n) },
	}
	if n <= dev.Size()+1 { // a buffer of n bytes is affordable
		ops["ReadAt"] = func() error { _, err := dev.ReadAt(make([]byte, n), off); return err }
		ops["WriteAt"] = func() error { _, err := dev.WriteAt(make([]byte, n), off); return err }
	}
	if da, ok := dev.(backing.DirectAccesser); ok && dev.Capabilities().Has(backing.DAX) {
		ops["DirectAccess"] = func() error { _, err := da.DirectAccess(off, n); return err }
		ops["FlushRange"] = func() error { return da.FlushRange(off, n) }
	}
	return ops
}

// errReadOnlyExpected returns the error a read-only device may give for
// the operation before looking at its range, or a sentinel nothing wraps.
func errReadOnlyExpected(name string) error {
	switch name {
	case "WriteAt", "Discard", "WriteZeroes":
		return syscall.EROFS
	}
	return errNever
}

var errNever = errors.New("backingtest: no error wraps this")

func checkReadOnly(dev backing.Device) error {
	m, err := newModel(dev)
	if err != nil {
		return err
	}
	n := min(dev.Size(), 8192)
	var errs []error
	_, err = dev.WriteAt(pattern(1, n), 0)
	errs = append(errs, refusedReadOnly(dev, "WriteAt", err))
	errs = append(errs, refusedReadOnly(dev, "Discard", dev.Discard(0, n)))
	errs = append(errs, refusedReadOnly(dev, "WriteZeroes", dev.WriteZeroes(0, n)))
	if err := dev.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("Flush of a read-only device: %w", err))
	}
	errs = append(errs, m.verify())
	return errors.Join(errs...)
}

// checkDirectAccess checks that memory from DirectAccess is the device:
// block writes show in it, stores to it show in block reads.
func checkDirectAccess(dev backing.Device) error {
	da := dev.(backing.DirectAccesser)
	m, err := newModel(dev)
	if err != nil {
		return err
	}
	size := dev.Size()
	all, err := da.DirectAccess(0, size)
	if err != nil {
		return fmt.Errorf("DirectAccess of the whole device: %w", err)
	}
	if int64(len(all)) != size || int64(cap(all)) != size {
		return fmt.Errorf("DirectAccess(0, %d) returned len %d cap %d", size, len(all), cap(all))
	}
	if err := m.compare("DirectAccess of the whole device", all, 0); err != nil || dev.ReadOnly() {
		return err
	}
	off := min(4096-100, size/2) // straddle a page boundary when there is one
	n := min(300, size-off)
	steps := []op{
		{kind: opWrite, off: off, n: n, seed: 7},
		{kind: opDirectWrite, off: off + n/3, n: n / 3, seed: 8},
		{kind: opFlushRange, off: off, n: n},
		{kind: opRead, off: off, n: n},
		{kind: opWriteZeroes, off: off, n: n / 2},
		{kind: opDiscard, off: 0, n: size},
		{kind: opDirectWrite, off: size - n, n: n, seed: 9},
		{kind: opFlush},
	}
	for _, s := range steps {
		if err := m.apply(s); err != nil {
			return err
		}
		if err := m.compare(fmt.Sprintf("memory from DirectAccess after %v", s), all, 0); err != nil {
			return err
		}
	}
	return m.verify()
}

// checkNoDirectAccess checks that a device without DAX refuses to hand
// out memory even though its type has the method.
func checkNoDirectAccess(dev backing.Device) error {
	if _, err := dev.(backing.DirectAccesser).DirectAccess(0, 1); err == nil {
		return fmt.Errorf("DirectAccess succeeded on %s, whose capabilities are %s", dev.Path(), dev.Capabilities())
	}
	return nil
}

// checkClose checks that every operation fails with ErrClosed after
// Close, and that a second Close neither panics nor succeeds. Mem is the
// exception by design (a pool may reopen it): Close only counts.
func checkClose(dev backing.Device) error {
	if mem, ok := survivor(dev); ok {
		before := mem.Closes.Load()
		if err := dev.Close(); err != nil || mem.Closes.Load() != before+1 {
			return fmt.Errorf("Mem.Close = %v and counted %d closes, want nil and 1", err, mem.Closes.Load()-before)
		}
		return nil
	}
	if err := dev.Close(); err != nil {
		return fmt.Errorf("Close: %w", err)
	}
	ops := rangeOps(dev, 0, 1)
	ops["Flush"] = dev.Flush
	ops["second Close"] = dev.Close
	if da, ok := dev.(backing.DirectAccesser); ok {
		ops["DirectAccess"] = func() error { _, err := da.DirectAccess(0, 1); return err }
		ops["FlushRange"] = func() error { return da.FlushRange(0, 1) }
	}
	var errs []error
	for name, call := range ops {
		if err := call(); !errors.Is(err, backing.ErrClosed) {
			errs = append(errs, fmt.Errorf("%s after Close: got %v, want an error wrapping backing.ErrClosed", name, err))
		}
	}
	return errors.Join(errs...)
}

// checkConcurrentClose closes the device while goroutines read and write
// it: every operation must succeed or fail with ErrClosed, never crash.
func checkConcurrentClose(dev backing.Device) error {
	const workers, rounds = 4, 2000
	size := dev.Size()
	chunk := min(size/workers, 4096)
	var started, done sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			buf := pattern(uint64(w), chunk)
			off := int64(w) * chunk // disjoint ranges: concurrent writes are allowed there
			for i := range rounds {
				var err error
				if i%2 == 0 || dev.ReadOnly() {
					_, err = dev.ReadAt(buf, off)
				} else {
					_, err = dev.WriteAt(buf, off)
				}
				if i == 0 {
					started.Done()
				}
				if errors.Is(err, backing.ErrClosed) {
					return
				}
				if err != nil {
					errs[w] = fmt.Errorf("worker %d, round %d, during Close: %w", w, i, err)
					return
				}
			}
		}()
	}
	started.Wait()
	err := dev.Close()
	done.Wait()
	if err != nil {
		errs = append(errs, fmt.Errorf("Close during I/O: %w", err))
	}
	return errors.Join(errs...)
}

// survivor reports whether dev is (or wraps) a Mem, which Close does not
// disable.
func survivor(dev backing.Device) (*Mem, bool) {
	for {
		switch d := dev.(type) {
		case *Mem:
			return d, true
		case *Faulty:
			dev = d.Device
		default:
			return nil, false
		}
	}
}
