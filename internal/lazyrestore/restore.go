// Package lazyrestore brings a volume's memory back from a checkpoint
// image on demand: the volume serves at once, and each unit of its memory
// (Unit bytes, aligned) is read from the image when something first needs
// it, while a background pass restores the rest in order.
//
// Pages are placed with UFFDIO_COPY through a mapping of the region files
// this package registers for missing faults with a userfaultfd of its
// own: the kernel allocates, fills and inserts each page into the tmpfs
// file's page cache in one step. So no mapping ever sees a page half
// restored, and a page that is already there (restored before, or
// written since by a client after its restore) is never overwritten. A
// restore that a crash or a restart interrupted is thus continued by
// restoring the holes of the files again: every page present is one
// restored or written after it. The caller (the daemon) keeps holes from
// being made while a restore lasts (dm.Filler: discards wait for all of
// it) and records that one is under way.
//
// Only memory in small pages (tmpfs, memfd) is supported: hugetlbfs
// regions are restored eagerly by the caller.
package lazyrestore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/uffd"
)

// Piece is [Off, Off+Len) of the volume, held in the file open as FD
// (not owned) at FileOff. Page is the file's page size.
type Piece struct {
	Off, Len int64
	FD       int
	FileOff  int64
	Page     int64
	Path     string
}

// Config describes one restore.
type Config struct {
	// Size is the volume's size in bytes; Pieces cover [0, Size) in order.
	Size   int64
	Pieces []Piece
	// Image is read at volume offsets: the checkpoint to restore.
	Image io.ReaderAt
	// Unit is the bytes restored at once, a multiple of the page size;
	// 0: DefaultUnit.
	Unit int64
}

// DefaultUnit: 1 MiB is read from the image in about a millisecond, the
// wait of the first touch of a unit, and is large enough for the
// background pass to read the image at its disk's speed.
const DefaultUnit = 1 << 20

// ErrUnsupported: the memory cannot be restored lazily (restore it
// eagerly).
var ErrUnsupported = errors.New("lazy restore needs memory in small pages (tmpfs, memfd)")

// Restore is one restore under way. Fill, FillAll and Progress may be
// called from any goroutine; it implements dm.Filler.
type Restore struct {
	cfg   Config
	fd    *uffd.FD
	views []view
	units int64

	filled []atomic.Uint64 // bit per unit
	locks  [64]sync.Mutex  // by unit, striped
	done   atomic.Int64    // bytes of units restored
	left   atomic.Int64    // units not restored yet

	complete chan struct{} // closed once every unit is restored
	failMu   sync.Mutex
	failed   error         // the first error of the background pass
	broken   chan struct{} // closed with failed set
	stop     chan struct{}
	closed   sync.Once
	bufs     sync.Pool
}

// view is the restore's own mapping of one piece, registered for missing
// faults with its userfaultfd: only UFFDIO_COPY ever touches it.
type view struct {
	Piece
	mem []byte
}

// Start maps the pieces and registers them; Run restores in the
// background, Fill on demand.
func Start(cfg Config) (*Restore, error) {
	if cfg.Unit == 0 {
		cfg.Unit = DefaultUnit
	}
	page := int64(os.Getpagesize())
	if cfg.Unit%page != 0 || cfg.Size <= 0 {
		return nil, fmt.Errorf("lazy restore: unit %d must be a multiple of %d and the size %d positive", cfg.Unit, page, cfg.Size)
	}
	var pos int64
	for _, p := range cfg.Pieces {
		if p.Page != page {
			return nil, fmt.Errorf("%w: %s has %d-byte pages", ErrUnsupported, p.Path, p.Page)
		}
		if p.Off != pos || p.Len <= 0 || p.Off%page != 0 || p.Len%page != 0 && p.Off+p.Len != cfg.Size || p.FileOff%page != 0 {
			return nil, fmt.Errorf("lazy restore: piece [%d, +%d) of %s at file offset %d: pieces must cover the volume in order, page-aligned", p.Off, p.Len, p.Path, p.FileOff)
		}
		pos += p.Len
	}
	if pos != cfg.Size {
		return nil, fmt.Errorf("lazy restore: the pieces cover %d of %d bytes", pos, cfg.Size)
	}
	fd, err := uffd.New(0)
	if err != nil {
		return nil, fmt.Errorf("lazy restore: %w", err)
	}
	if _, err := fd.API(0, 0); err != nil {
		fd.Close()
		return nil, fmt.Errorf("lazy restore: %w", err)
	}
	r := &Restore{cfg: cfg, fd: fd, complete: make(chan struct{}), stop: make(chan struct{}), broken: make(chan struct{})}
	for _, p := range cfg.Pieces {
		n := roundUp(p.Len, page)
		mem, err := unix.Mmap(p.FD, p.FileOff, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("lazy restore: map %s: %w", p.Path, err)
		}
		r.views = append(r.views, view{Piece: p, mem: mem})
		if err := fd.Register(addrOf(mem), uintptr(n), uffd.ModeMissing); err != nil {
			r.Close()
			return nil, fmt.Errorf("lazy restore: %s: %w", p.Path, err)
		}
	}
	r.units = (cfg.Size + cfg.Unit - 1) / cfg.Unit
	r.filled = make([]atomic.Uint64, (r.units+63)/64)
	r.left.Store(r.units)
	r.bufs.New = func() any { b := make([]byte, cfg.Unit); return &b }
	return r, nil
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// Run restores every unit not restored yet, streams at a time, and
// returns once all are (nil) or the first fails. Close stops it early
// (ErrClosed).
func (r *Restore) Run(streams int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(streams, 1) {
		wg.Go(func() {
			for {
				select {
				case <-r.stop:
					return
				default:
				}
				u := next.Add(1) - 1
				if u >= r.units {
					return
				}
				if err := r.fillUnit(u); err != nil {
					r.fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-r.complete:
		return nil
	default:
	}
	if err := r.err(); err != nil {
		return err
	}
	return ErrClosed
}

// ErrClosed: the restore was closed before it was complete.
var ErrClosed = errors.New("lazy restore closed before it was complete")

func (r *Restore) fail(err error) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.failed == nil {
		r.failed = err
		close(r.broken)
	}
}

func (r *Restore) err() error {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failed
}

// Fill returns once [off, off+n) is restored.
func (r *Restore) Fill(off, n int64) error {
	if r.Complete() {
		return nil
	}
	if n <= 0 {
		return nil
	}
	if off < 0 || off >= r.cfg.Size {
		return nil // out of range: the I/O reports it
	}
	last := min(off+n, r.cfg.Size) - 1
	for u := off / r.cfg.Unit; u <= last/r.cfg.Unit; u++ {
		if err := r.fillUnit(u); err != nil {
			return err
		}
	}
	return nil
}

// FillAll returns once everything is restored, or the background pass
// (Run) has failed or been closed.
func (r *Restore) FillAll() error {
	select {
	case <-r.complete:
		return nil
	case <-r.broken:
	case <-r.stop:
	}
	if err := r.err(); err != nil {
		return err
	}
	return ErrClosed
}

// Complete reports whether every unit is restored.
func (r *Restore) Complete() bool {
	select {
	case <-r.complete:
		return true
	default:
		return false
	}
}

// Stopped is closed by Close.
func (r *Restore) Stopped() <-chan struct{} { return r.stop }

// Done is closed once every unit is restored.
func (r *Restore) Done() <-chan struct{} { return r.complete }

// Progress is the bytes restored so far and the volume's size.
func (r *Restore) Progress() (done, total int64) { return r.done.Load(), r.cfg.Size }

func (r *Restore) isFilled(u int64) bool { return r.filled[u/64].Load()&(1<<(u%64)) != 0 }

// fillUnit restores unit u unless it is: the holes of its range are
// filled from the image.
func (r *Restore) fillUnit(u int64) error {
	if r.isFilled(u) {
		return nil
	}
	mu := &r.locks[u%int64(len(r.locks))]
	mu.Lock()
	defer mu.Unlock()
	if r.isFilled(u) {
		return nil
	}
	off := u * r.cfg.Unit
	n := min(r.cfg.Unit, r.cfg.Size-off)
	holes, err := r.hasHoles(off, n)
	if err != nil {
		return err
	}
	if holes {
		bp := r.bufs.Get().(*[]byte)
		defer r.bufs.Put(bp)
		buf := (*bp)[:n]
		if _, err := r.cfg.Image.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF)) {
			return fmt.Errorf("read the checkpoint image at %d: %w", off, err)
		}
		if err := r.place(buf, off); err != nil {
			return err
		}
	}
	r.filled[u/64].Or(1 << (u % 64))
	r.done.Add(n)
	if r.left.Add(-1) == 0 {
		close(r.complete)
	}
	return nil
}

// hasHoles reports whether [off, off+n) of the volume has a page not in
// its file (SEEK_HOLE).
func (r *Restore) hasHoles(off, n int64) (bool, error) {
	found := false
	err := r.each(off, n, func(v *view, voff, pos, n int64) error {
		if found {
			return nil
		}
		start := v.FileOff + voff
		h, err := unix.Seek(v.FD, start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find holes in %s: %w", v.Path, err)
		}
		found = h < start+n
		return nil
	})
	return found, err
}

// place copies buf, the bytes of [off, off+len(buf)), into the holes of
// the files.
func (r *Restore) place(buf []byte, off int64) error {
	return r.each(off, int64(len(buf)), func(v *view, voff, pos, n int64) error {
		page := v.Page
		need := roundUp(n, page)
		var src []byte
		if pos+need <= int64(len(buf)) {
			src = buf[pos : pos+need]
		} else { // the volume's last, partial page
			src = append(buf[pos:pos+n:pos+n], make([]byte, need-n)...)
		}
		if _, err := r.fd.Fill(addrOf(v.mem)+uintptr(voff), src, int(page), false); err != nil {
			return fmt.Errorf("restore %d bytes of %s at %d: %w", n, v.Path, v.FileOff+voff, err)
		}
		return nil
	})
}

// each calls fn for the pieces of [off, off+n): voff is the offset in
// the view, pos in the range.
func (r *Restore) each(off, n int64, fn func(v *view, voff, pos, n int64) error) error {
	for i := range r.views {
		v := &r.views[i]
		lo, hi := max(off, v.Off), min(off+n, v.Off+v.Len)
		if lo >= hi {
			continue
		}
		if err := fn(v, lo-v.Off, lo-off, hi-lo); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the background pass and unmaps the restore's views. Call
// it once nothing calls Fill any more (the caller removed it as its
// device's filler).
func (r *Restore) Close() error {
	r.closed.Do(func() {
		close(r.stop)
		for _, v := range r.views {
			unix.Munmap(v.mem)
		}
		r.fd.Close()
	})
	return nil
}
