// Package striped implements the `striped` target (RAID-0, the kernel's
// dm-stripe): consecutive chunks of the mapped range rotate among the
// backing devices.
//
// Table line: `<start> <length> striped <#stripes> <chunk_size> [<dev> <offset>]...`
// with chunk_size a power of two of at least 8 sectors and length a
// multiple of chunk_size × #stripes. dmsetup table prints the arguments;
// dmsetup status prints `<#stripes> <dev>... 1 <A|D>...`, one health
// character per stripe (D once an I/O to that stripe's device has failed).
package striped

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// Type is the striped target type, version as in the kernel's dm-stripe.c.
var Type = &dm.TargetType{Name: "striped", Version: [3]int{1, 6, 0}, New: newStriped}

// MinChunk is the smallest chunk size in sectors: one 4 KiB page, so that
// direct access can hand out whole pages.
const MinChunk = 8

type stripe struct {
	dev    *dm.DeviceRef
	start  int64        // byte offset of the stripe's first chunk in dev
	errors atomic.Int64 // failed I/Os, shown as 'D' in status
}

type striped struct {
	chunk   int64 // chunk size in bytes
	stripes []*stripe
}

var (
	_ dm.Target         = (*striped)(nil)
	_ dm.DirectAccesser = (*striped)(nil)
	_ dm.Remapper       = (*striped)(nil)
)

const syntax = "<#stripes> <chunk_size> followed by a <dev> <offset> pair per stripe"

// newStriped constructs a striped target (stripe_ctr). Numbers are all
// checked before any device is opened.
func newStriped(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	if len(args) < 2 {
		return nil, fmt.Errorf("want %s, got %d argument(s)%s", syntax, len(args), dm.QuoteArgs(args))
	}
	n, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("invalid stripe count %q: want a number from 1 to %d", args[0], uint32(1<<32-1))
	}
	chunk, err := parseChunk(args[1])
	if err != nil {
		return nil, err
	}
	if want := 2 + 2*n; uint64(len(args)) != want {
		return nil, fmt.Errorf("%d stripe(s) need %d arguments (%s), got %d", n, want, syntax, len(args))
	}
	if err := checkLength(ctx.Len, chunk, dm.Sector(n)); err != nil {
		return nil, err
	}
	offs := make([]dm.Sector, n)
	for i := range offs {
		if offs[i], err = dm.ParseOffset(args[3+2*i]); err != nil {
			return nil, fmt.Errorf("stripe %d of %d: %w", i+1, n, err)
		}
	}
	width := ctx.Len / dm.Sector(n)
	s := &striped{chunk: chunk.Bytes(), stripes: make([]*stripe, n)}
	for i := range s.stripes {
		dev, err := ctx.OpenDevice(args[2+2*i], offs[i], width)
		if err != nil {
			return nil, fmt.Errorf("stripe %d of %d: %w", i+1, n, err)
		}
		s.stripes[i] = &stripe{dev: dev, start: offs[i].Bytes()}
	}
	return s, nil
}

func parseChunk(s string) (dm.Sector, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid chunk size %q: want a power of two ≥ %d sectors", s, MinChunk)
	}
	if v < MinChunk || v&(v-1) != 0 {
		return 0, fmt.Errorf("invalid chunk size %d: must be a power of two ≥ %d sectors", v, MinChunk)
	}
	return dm.Sector(v), nil
}

// checkLength requires whole rows of chunks, which is what dm-stripe's two
// checks (length divisible by #stripes, width by chunk size) amount to.
func checkLength(length, chunk, n dm.Sector) error {
	row := chunk * n
	if length%row == 0 {
		return nil
	}
	lower := length - length%row
	near := fmt.Sprintf("%d", lower+row)
	if lower > 0 {
		near = fmt.Sprintf("%d or %d", lower, lower+row)
	}
	return fmt.Errorf("target length %d is not a multiple of chunk size × stripes = %d × %d = %d sectors; make it %s",
		length, chunk, n, row, near)
}

// mapOff is the one mapping from a target offset to a stripe and an offset
// in that stripe's device, used by block I/O and direct access
// (stripe_map_sector).
// IOOpt is chunk × stripes, as the kernel's stripe_io_hints says: it
// makes a 2-stripe device's read-ahead 512 sectors with 128-sector chunks.
func (s *striped) IOOpt() int64 { return s.chunk * int64(len(s.stripes)) }

func (s *striped) mapOff(off int64) (*stripe, int64) {
	i, devOff := s.locate(off)
	st := s.stripes[i]
	return st, st.start + devOff
}

// locate returns the stripe index and the offset relative to the stripe's start.
func (s *striped) locate(off int64) (int, int64) {
	chunk, within := off/s.chunk, off%s.chunk
	n := int64(len(s.stripes))
	return int(chunk % n), chunk/n*s.chunk + within
}

// chunked runs io on each piece of [off, off+len(p)) that lies within one chunk.
func (s *striped) chunked(p []byte, off int64, io func(st *stripe, q []byte, devOff int64) (int, error)) (int, error) {
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		n := int(min(int64(len(p)-done), s.chunk-pos%s.chunk))
		st, devOff := s.mapOff(pos)
		m, err := io(st, p[done:done+n], devOff)
		done += m
		if err == nil && m < n {
			err = fmt.Errorf("short transfer on %s: %d of %d bytes", st.dev.Name, m, n)
		}
		if err != nil {
			s.failed(st, err)
			return done, err
		}
	}
	return done, nil
}

// failed counts an I/O error against every stripe on the failing device,
// as stripe_end_io does; unsupported operations are not the device's fault.
func (s *striped) failed(st *stripe, err error) {
	if errors.Is(err, dm.ErrNotSupported) {
		return
	}
	for _, o := range s.stripes {
		if o.dev.Device == st.dev.Device {
			o.errors.Add(1)
		}
	}
}

func (s *striped) ReadAt(p []byte, off int64) (int, error) {
	return s.chunked(p, off, func(st *stripe, q []byte, devOff int64) (int, error) { return st.dev.ReadAt(q, devOff) })
}

func (s *striped) WriteAt(p []byte, off int64) (int, error) {
	return s.chunked(p, off, func(st *stripe, q []byte, devOff int64) (int, error) { return st.dev.WriteAt(q, devOff) })
}

// Flush flushes every device once, even when stripes share one.
func (s *striped) Flush() error {
	var errs []error
	seen := make(map[backing.Device]bool, len(s.stripes))
	for _, st := range s.stripes {
		if seen[st.dev.Device] {
			continue
		}
		seen[st.dev.Device] = true
		if err := st.dev.Flush(); err != nil {
			s.failed(st, err)
			errs = append(errs, fmt.Errorf("flush %s: %w", st.dev.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *striped) Discard(off, n int64) error {
	return s.perStripe(off, n, func(st *stripe, devOff, n int64) error { return st.dev.Discard(devOff, n) })
}

func (s *striped) WriteZeroes(off, n int64) error {
	return s.perStripe(off, n, func(st *stripe, devOff, n int64) error { return st.dev.WriteZeroes(devOff, n) })
}

// perStripe sends one request per stripe: a target range covers one
// contiguous range on each stripe's device (stripe_map_range).
func (s *striped) perStripe(off, n int64, op func(st *stripe, devOff, n int64) error) error {
	var errs []error
	for i, st := range s.stripes {
		begin, end := s.edge(off, i), s.edge(off+n, i)
		if begin >= end {
			continue
		}
		if err := op(st, st.start+begin, end-begin); err != nil {
			s.failed(st, err)
			errs = append(errs, fmt.Errorf("stripe %d (%s): %w", i+1, st.dev.Name, err))
		}
	}
	return errors.Join(errs...)
}

// edge returns where, on stripe want, the target range ending (or
// starting) at off ends: the mapped offset if off falls in one of want's
// chunks, else the nearest chunk boundary of want's device at or after the
// chunks of want that precede off.
func (s *striped) edge(off int64, want int) int64 {
	i, devOff := s.locate(off)
	if i == want {
		return devOff
	}
	devOff -= devOff % s.chunk
	if want < i {
		devOff += s.chunk // want's chunk in this row lies wholly before off
	}
	return devOff
}

// DirectAccess returns memory up to the end of the chunk holding off: the
// next chunk lives on another device.
func (s *striped) DirectAccess(off, n int64) ([]byte, error) {
	st, devOff := s.mapOff(off)
	da, ok := st.dev.Device.(backing.DirectAccesser)
	if !ok {
		return nil, fmt.Errorf("%w: %s is a %s without direct access", dm.ErrNotSupported, st.dev.Name, st.dev.Kind())
	}
	return da.DirectAccess(devOff, min(n, s.chunk-off%s.chunk))
}

// Remap says where target byte off lives, up to the end of its chunk: the
// next chunk lives on another device.
func (s *striped) Remap(off, n int64) (*dm.DeviceRef, int64, int64, error) {
	st, devOff := s.mapOff(off)
	return st.dev, devOff, min(n, s.chunk-off%s.chunk), nil
}

func (s *striped) Status(kind dm.StatusType) string {
	var b strings.Builder
	if kind == dm.StatusTable {
		fmt.Fprintf(&b, "%d %d", len(s.stripes), s.chunk/dm.SectorSize)
		for _, st := range s.stripes {
			fmt.Fprintf(&b, " %s %d", st.dev.TableName(), st.start/dm.SectorSize)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "%d ", len(s.stripes))
	for _, st := range s.stripes {
		fmt.Fprintf(&b, "%s ", st.dev.TableName())
	}
	b.WriteString("1 ")
	for _, st := range s.stripes {
		if st.errors.Load() > 0 {
			b.WriteByte('D')
		} else {
			b.WriteByte('A')
		}
	}
	return b.String()
}

// Close has nothing to release: the core puts the devices back.
func (s *striped) Close() error { return nil }
