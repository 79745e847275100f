package session

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/uffd"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// mapping is one armed client mapping: device bytes [off, off+n) at client
// address addr.
type mapping struct {
	sess *session
	id   uint64
	dev  *dm.Device
	ds   *devState // dev's
	// dss are the states of dev and of every device the mapped range was
	// resolved through (tables over /dev/mapper/NAME), in seq order: a
	// snapshot of any of them must catch the mapping's stores.
	dss   []*devState
	off   int64
	n     int64
	write bool
	page  int64
	uffd  *uffd.FD // nil: no write protection (read-only, or memory without wpfault)
	// keep: the client keeps its own userfaultfd reference and hands the
	// mapping to the next daemon; adopted: made with an earlier daemon.
	keep, adopted bool

	mu   sync.Mutex
	addr uintptr // moves with an mremap of the whole range

	faults, held atomic.Int64
	resolved     atomic.Int64 // faults resolved: un-protected, and noted in a sweep (Hooks.Sweep)

	// heldPages are the pages whose fault a sweep holds: a writer
	// interrupted by a signal (the Go runtime preempts every ~10 ms) faults
	// again on the same page, and the repeat needs no second resolution.
	heldMu    sync.Mutex
	heldPages map[int64]struct{}
	// noted are the ranges un-protected while a cut's sweep notes them
	// (noting), to be protected again (cut.go).
	noteMu sync.Mutex
	noting bool
	// wide: a fault during the sweep un-protects sweepUnit (until the
	// first further round).
	wide      bool
	noted     []span
	dropped   atomic.Bool
	opened    bool          // holds dev open (set before attach)
	closeOnce sync.Once     // detach's work, once
	gone      chan struct{} // closed by detach
	handling  bool          // a handler goroutine runs
	done      chan struct{} // closed when the handler has returned

	files     []backing.ID         // the memory files mapped, for a recall's check
	mem       []dm.MemRange        // the memory mapped, for cuts
	recallAns chan wire.SessionMsg // the client's answer to the recall under way
}

// attach puts the mapping in its device's index and, when some snapshot of
// the device copies out or a cut covers its memory, protects it whole
// before the client may use it (its faults then held by the cut). Without
// either it still checks the client registered the whole range.
func (m *mapping) attach() error {
	if m.dev.Filling() {
		if err := m.armRestore(); err != nil {
			return err
		}
	}
	srv := m.sess.srv
	// A cut lists mappings under protMu: m is either in its list or
	// sees the cut here.
	srv.protMu.Lock()
	defer srv.protMu.Unlock()
	// A recall fences and lists a device's mappings under its mapsMu: m
	// is either in that list or sees the fence.
	if err := m.index(); err != nil {
		return err
	}
	if m.uffd == nil {
		return nil
	}
	// Either operation fails (ErrNotRegistered) unless the client
	// registered the whole range with this userfaultfd. No cut covers
	// the memory when WriteGranularity is asked, so no device it reaches
	// is suspended: it does not wait.
	op := m.uffd.Unprotect
	if srv.armUnderCuts(m) || m.dev.WriteGranularity(m.off, m.n) > 0 {
		op = m.uffd.Protect
	}
	err := retry(func() error { return op(m.addr, uintptr(m.n)) })
	if err != nil {
		return fmt.Errorf("mapping %d of %s: the userfaultfd must have the whole range registered in write-protect mode: %w", m.id, m.dev.Name(), err)
	}
	m.handling = true
	go m.handle()
	return nil
}

// armRestore prepares a mapping of memory still being restored on demand
// (dm.Device.Filling): the client's range is registered for missing
// faults too, which the handler resolves by restoring the page's unit
// first (missing); a mapping without a userfaultfd of the daemon's gets
// its whole range restored before the client may use it.
func (m *mapping) armRestore() error {
	if m.uffd == nil {
		if err := m.dev.Fill(m.off, m.n); err != nil {
			return fmt.Errorf("mapping %d of %s: %w", m.id, m.dev.Name(), err)
		}
		return nil
	}
	err := retry(func() error { return m.uffd.Register(m.base(), uintptr(m.n), uffd.ModeMissing|uffd.ModeWP) })
	if err != nil {
		return fmt.Errorf("mapping %d of %s: its memory is being restored, and its range could not be registered for missing faults: %w", m.id, m.dev.Name(), err)
	}
	return nil
}

// missing resolves a fault on a page not in memory at device offset off
// (client address addr): its unit is restored if the restore on demand
// has not done it yet, and a page still missing then (a hole, after a
// discard) is resolved with zeroes, write-protected so that a store to it
// is seen as any first store is.
func (m *mapping) missing(off int64, addr uintptr) {
	srv := m.sess.srv
	page := off - off%m.page
	if err := m.dev.Fill(page, m.page); err != nil {
		srv.stats.HandlerErrors.Add(1)
		srv.log.Error("restore of a page a client touched failed; the client waits and retries", append(m.sess.log(), "device", m.dev.Name(), "offset", page, "err", err)...)
		time.Sleep(100 * time.Millisecond)
		m.uffd.Wake(addr, uintptr(m.page))
		return
	}
	placed, err := m.uffd.ZeroPage(addr, int(m.page))
	if err != nil && !gone(err) {
		srv.log.Error("resolve a fault on a hole", append(m.sess.log(), "device", m.dev.Name(), "offset", page, "err", err)...)
	}
	if !placed {
		m.uffd.Wake(addr, uintptr(m.page))
	}
}

// index adds m to its devices' indexes unless a recall fences one of them.
func (m *mapping) index() error {
	for _, ds := range m.dss {
		ds.mapsMu.Lock()
		defer ds.mapsMu.Unlock()
	}
	for _, ds := range m.dss {
		if ds.fence.Load() > 0 {
			return fmt.Errorf("device %s: %w: map again shortly", ds.dev.Name(), errFenced)
		}
	}
	for _, ds := range m.dss {
		ds.maps[m] = struct{}{}
	}
	return nil
}

// retry runs a range operation until the client's pending layout change
// (munmap, mremap, madvise) has gone through, for up to a second.
func retry(op func() error) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := op()
		if !errors.Is(err, uffd.ErrLayoutChanging) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// gone reports errors that mean the mapping or its process no longer exists.
func gone(err error) bool {
	return errors.Is(err, uffd.ErrProcessGone) || errors.Is(err, uffd.ErrClosed) || errors.Is(err, uffd.ErrNotRegistered)
}

func (m *mapping) base() uintptr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

// protectAll write-protects the whole mapping, in pieces (inPieces).
func (m *mapping) protectAll() error {
	if m.uffd == nil || m.dropped.Load() {
		return nil
	}
	err := m.inPieces(0, m.n, m.uffd.Protect)
	if err != nil && gone(err) {
		// The process exited (its session ends on its socket), or it
		// unmapped the range and the handler is about to drop it: either
		// way nothing can store through this mapping any more.
		return nil
	}
	return err
}

// wpPiece bounds the range of one UFFDIO_WRITEPROTECT of a large range
// (a sweep, the lift of a cut's protection): the kernel holds the client
// process's mmap lock, shared, for the whole range of a call, about 15 ms
// per GiB, and a thread of the client that maps or unmaps anything (malloc
// does) waits for all of it, and behind that thread every other taker of
// the lock (a page fault that needs it, the daemon's next un-protect in
// that process): one call over a 16 GiB mapping held mmap for 250 ms.
// 32 MiB takes about 0.5 ms; each call also costs about 2 µs and a TLB
// flush, 32 per GiB. Tests set it (SetWPPiece) while handlers of other
// tests' servers may still read it.
var wpPiece atomic.Int64

func init() { wpPiece.Store(32 << 20) }

// inPieces runs op (Protect or Unprotect) over the mapping's bytes [lo,
// hi) (offsets into the mapping) in pieces of at most wpPiece bytes (a
// page, if the mapping's pages are larger), each retried (retry) at the
// mapping's address then: the client may move it meanwhile.
func (m *mapping) inPieces(lo, hi int64, op func(addr, n uintptr) error) error {
	step := max(wpPiece.Load(), m.page)
	for at := lo; at < hi; at += step {
		n := min(step, hi-at)
		m.sess.srv.stats.WPCalls.Add(1)
		if err := retry(func() error { return op(m.base()+uintptr(at), uintptr(n)) }); err != nil {
			return err
		}
	}
	return nil
}

// span is a range [lo, hi) of device offsets.
type span struct{ lo, hi int64 }

// startNoting makes unprotect note every range it un-protects, until
// takeNoted(true).
func (m *mapping) startNoting() {
	m.noteMu.Lock()
	m.noting, m.wide, m.noted = true, true, nil
	m.noteMu.Unlock()
}

// wideUnit reports whether a fault on m, on a device that needs no store
// seen, un-protects sweepUnit: during a cut's sweep, not during its
// further rounds, whose noted set must shrink (Cut).
func (m *mapping) wideUnit() bool {
	m.noteMu.Lock()
	defer m.noteMu.Unlock()
	return m.noting && m.wide
}

// sweepUnit is what a fault during a cut's sweep un-protects when the
// device needs no store seen (WriteGranularity 0): protecting 2 MiB again
// in the held phase costs about 30 µs.
const sweepUnit = 2 << 20

// notedCost estimates what protecting the ranges noted so far again
// would take: an ioctl per merged range, and the walk of its pages.
func (m *mapping) notedCost() time.Duration {
	m.noteMu.Lock()
	rs := slices.Clone(m.noted)
	m.noteMu.Unlock()
	var d time.Duration
	for _, r := range mergeSpans(rs) {
		d += protectCall + time.Duration((r.hi-r.lo)>>12)*protect4K
	}
	return d
}

// What a UFFDIO_WRITEPROTECT costs: per call (with its TLB flush), and
// per 4 KiB of the range it walks (15.5 ms per GiB on a 2-CPU VM).
const (
	protectCall = 2 * time.Microsecond
	protect4K   = 60 * time.Nanosecond
)

// takeNoted returns the ranges noted so far, merged (mergeSpans), and
// starts afresh, faults from now on un-protecting their page (or chunk)
// only; stop ends the noting.
func (m *mapping) takeNoted(stop bool) []span {
	m.noteMu.Lock()
	rs := m.noted
	m.noted, m.wide = nil, false
	if stop {
		m.noting = false
	}
	m.noteMu.Unlock()
	return mergeSpans(rs)
}

// mergeSpans sorts rs and merges ranges less than noteGap apart, with
// the pages between them: protecting a page again costs less than another
// ioctl, and during a cut every page may be protected.
func mergeSpans(rs []span) []span {
	slices.SortFunc(rs, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	var out []span
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && r.lo <= out[k].hi+noteGap {
			out[k].hi = max(out[k].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// noteGap is the distance below which mergeSpans merges two ranges: the
// walk of the pages between them costs less than another ioctl.
const noteGap = int64(protectCall/protect4K) << 12

// reprotect write-protects the ranges rs again and returns the pages it
// covered; fail gets the errors other than the mapping being gone.
func (m *mapping) reprotect(rs []span, fail func(*mapping, error)) int64 {
	if m.uffd == nil || len(rs) == 0 {
		return 0
	}
	var pages int64
	for _, r := range rs {
		if m.dropped.Load() {
			return pages
		}
		err := m.inPieces(r.lo-m.off, r.hi-m.off, m.uffd.Protect)
		if err != nil && !gone(err) {
			fail(m, err)
		}
		pages += (r.hi - r.lo) / m.page
	}
	return pages
}

// unprotect lifts protection of device range [off, off+n) where this
// mapping covers it, and wakes writers there. During a cut's sweep the
// range is noted (after the un-protect: a round that takes the noted
// ranges while this runs finds it in the next).
func (m *mapping) unprotect(off, n int64) {
	if m.uffd == nil {
		return
	}
	lo, hi := max(off, m.off), min(off+n, m.off+m.n)
	if lo >= hi {
		return
	}
	if err := m.inPieces(lo-m.off, hi-m.off, m.uffd.Unprotect); err != nil && !gone(err) {
		m.sess.srv.stats.HandlerErrors.Add(1)
		m.sess.srv.log.Error("un-protect failed: the writer may stay blocked until the session ends",
			append(m.sess.log(), "device", m.dev.Name(), "offset", lo, "length", hi-lo, "err", err)...)
	}
	m.noteMu.Lock()
	if m.noting {
		m.noted = append(m.noted, span{lo, hi})
	}
	m.noteMu.Unlock()
}

// drop removes the mapping from its device's index and releases the
// daemon's copy of its userfaultfd. The client library keeps its own, so
// the range stays protected (a writer there waits) until the library
// hands it to the next daemon or closes it; with a client holding no copy
// (an older library) the kernel lifts the protection and wakes any writer.
func (m *mapping) drop() {
	if !m.dropped.Swap(true) {
		m.detach()
		if m.uffd != nil {
			m.uffd.Close()
		}
	}
	// Also when the handler dropped it first (its client unmapped): the
	// handler may be detaching it right now, and a session's release, so
	// Server.Close, must not return before its device close is counted.
	if m.handling {
		// The handler returns once its current fault is resolved; one
		// waiting for a suspended device may take until the device
		// resumes, and nobody must hang on that (shutdown, a session's end).
		select {
		case <-m.done:
		case <-time.After(dropWait):
			m.sess.srv.log.Warn("fault handler still busy after its mapping was dropped (device suspended?); not waiting for it",
				append(m.sess.log(), "device", m.dev.Name())...)
		}
	}
}

// detach removes the mapping from its devices' indexes and lets the
// device go: a live mapping holds it open, as an mmap of a block device
// does, so that it cannot be removed from under the client.
func (m *mapping) detach() {
	for _, ds := range m.dss {
		ds.mapsMu.Lock()
		delete(ds.maps, m)
		ds.mapsMu.Unlock()
	}
	m.closeOnce.Do(func() {
		if m.gone != nil {
			close(m.gone)
		}
		if !m.opened {
			return
		}
		// Not waited for: a recall runs while the device's control lock
		// is held (for the resume it serves), which Close needs.
		srv := m.sess.srv
		srv.closeMu.Lock()
		counted := !srv.closesWaited
		if counted {
			srv.closing.Add(1)
		}
		srv.closeMu.Unlock()
		go func() {
			if counted {
				defer srv.closing.Done()
			}
			if err := m.dev.Close(); err != nil {
				m.sess.srv.log.Warn("closing a mapped device failed", append(m.sess.log(), "device", m.dev.Name(), "err", err)...)
			}
		}()
	})
}

// dropWait bounds how long dropping a mapping waits for its handler.
const dropWait = 5 * time.Second

// handle reads the userfaultfd until it is closed. It spins for the next
// fault (Server.spin) unless that holds back a writer on its CPU
// (uffd.Spinner).
func (m *mapping) handle() {
	defer close(m.done)
	srv := m.sess.srv
	buf := make([]uffd.Msg, 64)
	spin := uffd.Spinner{Max: srv.spin}
	for {
		n, err := spin.Wait(m.uffd, buf, uffd.BlockPoll)
		if err != nil {
			if !errors.Is(err, uffd.ErrClosed) {
				srv.stats.HandlerErrors.Add(1)
				srv.log.Error("fault handler stops", append(m.sess.log(), "device", m.dev.Name(), "err", err)...)
				m.sess.conn.Close() // end the session: its mappings are released
			}
			return
		}
		for _, msg := range buf[:n] {
			m.event(msg)
		}
	}
}

func (m *mapping) event(msg uffd.Msg) {
	srv := m.sess.srv
	switch msg.Event {
	case uffd.EventPagefault:
		f := msg.Fault()
		m.faults.Add(1)
		srv.stats.Faults.Add(1)
		base := m.base()
		if f.Addr < base || f.Addr >= base+uintptr(m.n) {
			srv.log.Warn("fault outside the mapping", append(m.sess.log(), "addr", f.Addr, "mapping", base)...)
			m.uffd.Wake(f.Addr&^uintptr(m.page-1), uintptr(m.page))
			return
		}
		if f.Flags&uffd.FaultWP == 0 {
			// Registered for missing faults while its memory is restored:
			// a restore waits for the image, not for this handler.
			go m.missing(m.off+int64(f.Addr-base), f.Addr&^uintptr(m.page-1))
			return
		}
		m.fault(m.off+int64(f.Addr-base), time.Now())
	case uffd.EventRemove:
		// MADV_REMOVE/DONTNEED of a shared mapping zeroes pages without a
		// write fault: run copy-before-write at once (best effort: the
		// client's madvise has already gone on).
		start, end := msg.Range()
		base := m.base()
		lo, hi := max(start, base), min(end, base+uintptr(m.n))
		if lo < hi {
			srv.log.Warn("client discarded mapped pages (MADV_REMOVE): copying them for snapshots, racing the discard",
				append(m.sess.log(), "device", m.dev.Name())...)
			off := m.off + int64(lo-base)
			if err := m.dev.PrepareWrite(off, int64(hi-lo)); err != nil {
				srv.log.Error("copy before discard failed", "err", err)
			}
		}
	case uffd.EventRemap:
		from, to, n := msg.Remap()
		m.mu.Lock()
		if from == m.addr && n == uintptr(m.n) {
			m.addr = to
		}
		m.mu.Unlock()
	case uffd.EventUnmap:
		start, end := msg.Range()
		base := m.base()
		if start < base+uintptr(m.n) && end > base {
			m.dropped.Store(true) // the handler leaves after this batch: Close below interrupts Wait
			if h := srv.cfg.Hooks.Unmap; h != nil {
				h()
			}
			m.detach()
			m.sess.forget(m.id, m)
			go m.uffd.Close()
		}
	}
}

// fault resolves a write fault at device offset off: copy-before-write for
// its unit, then un-protect that unit in every mapping of the device. During
// a cut it is held until the cut ends.
func (m *mapping) fault(off int64, began time.Time) {
	var ch chan struct{}
	for _, ds := range m.dss {
		ds.mu.RLock()
		if ds.sweeping != nil && ch == nil {
			ch = ds.sweeping
		}
	}
	unlock := func() {
		for _, ds := range m.dss {
			ds.mu.RUnlock()
		}
	}
	if ch != nil && !m.sess.srv.brokenCut() {
		unlock()
		page := off - off%m.page
		m.heldMu.Lock()
		_, repeat := m.heldPages[page]
		if !repeat {
			if m.heldPages == nil {
				m.heldPages = map[int64]struct{}{}
			}
			m.heldPages[page] = struct{}{}
		}
		m.heldMu.Unlock()
		if repeat {
			// The held resolution un-protects the page, which wakes this
			// writer too.
			m.sess.srv.stats.Repeats.Add(1)
			return
		}
		m.held.Add(1)
		m.sess.srv.stats.Held.Add(1)
		go func() {
			<-ch
			m.heldMu.Lock()
			delete(m.heldPages, page)
			m.heldMu.Unlock()
			m.sess.srv.stats.HeldNanos.Add(int64(time.Since(began)))
			m.fault(off, began)
		}()
		return
	}
	defer unlock()
	defer func() { m.sess.srv.stats.observe(time.Since(began)) }()
	dev := m.dev
	g := dev.WriteGranularity(off, 1)
	unit := max(g, m.page)
	if g == 0 && m.wideUnit() {
		// A cut's sweep, and no store needs seeing: un-protect a wider
		// unit, noted and protected again later, so that a writer's hot
		// range costs it a few faults during the long sweep, not one a
		// page. The rounds after it un-protect a page: what a writer
		// touches during a short round is then a few pages, not its
		// whole hot range again.
		unit = max(unit, sweepUnit)
	}
	if r := unit % m.page; r != 0 {
		unit += m.page - r
	}
	start := off - off%unit
	end := min(start+unit, dev.Size())
	if g > 0 {
		m.sess.srv.stats.Prepared.Add(1)
		m.sess.srv.stats.PreparedBytes.Add(end - start)
		if err := dev.PrepareWrite(start, end-start); err != nil {
			m.sess.srv.log.Error("copy-before-write failed; letting the write through", "device", dev.Name(), "offset", start, "err", err)
		}
	}
	var buf [4]*mapping
	for _, other := range m.ds.appendList(buf[:0]) {
		other.unprotect(start, end-start)
	}
	m.resolved.Add(1)
}
