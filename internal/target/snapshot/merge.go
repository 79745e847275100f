package snapshot

import (
	"fmt"
	"sync"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// MergeType is `snapshot-merge <origin> <cow> P <chunk_size>`: it takes
// the place of snapshot-origin and copies the snapshot's exceptions back
// onto the origin in the background, while the device stays usable: chunks
// still in the COW are read and written there, others on the origin.
var MergeType = &dm.TargetType{Name: "snapshot-merge", Version: [3]int{1, 5, 0}, New: newMerge}

func newMerge(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	t, err := construct(ctx, args, mergingSnapshot)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// merger runs the merge loop of one COW state.
type merger struct {
	s *cowState

	mu      sync.Mutex
	running bool
	quit    chan struct{}
	done    chan struct{}
}

func newMerger(s *cowState) *merger { return &merger{s: s} }

func (m *merger) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running || !m.s.valid.Load() || m.s.mergeFailed.Load() {
		return
	}
	m.running = true
	m.quit, m.done = make(chan struct{}), make(chan struct{})
	go m.loop(m.quit, m.done)
}

// stop asks the loop to stop after its current step and waits for it.
func (m *merger) stop() {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return
	}
	m.running = false
	close(m.quit)
	done := m.done
	m.mu.Unlock()
	<-done
}

func (m *merger) loop(quit, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-quit:
			return
		default:
		}
		n, err := m.step()
		if err != nil {
			m.s.mergeFailed.Store(true)
			m.s.log.Error("merge failed", "origin", m.s.originName, "err", err)
			m.s.triggerEvents()
			return
		}
		if n == 0 {
			m.s.log.Info("merge finished", "origin", m.s.originName)
			m.s.triggerEvents()
			return
		}
	}
}

// step merges the newest run of consecutive exceptions: copy the origin
// chunks out to the origin's other snapshots, copy the COW chunks back,
// flush the origin, then forget the exceptions durably
// (snapshot_merge_next_chunks, merge_callback).
func (m *merger) step() (int, error) {
	s := m.s
	last, n, err := s.store.PrepareMerge()
	if err != nil || n == 0 {
		return 0, err
	}
	firstOld, firstNew := last.Old-exstore.Chunk(n-1), last.New-exstore.Chunk(n-1)
	chunks := make([]exstore.Chunk, n)
	for i := range chunks {
		chunks[i] = firstOld + exstore.Chunk(i)
		if to, ok := s.lookup(chunks[i]); !ok || to != firstNew+exstore.Chunk(i) {
			return 0, fmt.Errorf("store's merge run %v (%d chunks) disagrees with the exception table at chunk %d", last, n, chunks[i])
		}
	}
	held := s.lockChunks(chunks)
	defer s.unlockStripes(held)
	off, _ := s.originSpan(firstOld)
	lastOff, lastLen := s.originSpan(last.Old)
	prepareWrite(s.reg, s.origin, off, lastOff+lastLen-off, s)
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	for i, c := range chunks {
		coff, clen := s.originSpan(c)
		buf := (*bp)[:clen]
		if _, err := s.cow.ReadAt(buf, int64(firstNew+exstore.Chunk(i))*s.chunkBytes); err != nil {
			return 0, fmt.Errorf("read COW chunk %d: %w", firstNew+exstore.Chunk(i), err)
		}
		if _, err := s.origin.WriteAt(buf, coff); err != nil {
			return 0, fmt.Errorf("write origin chunk %d: %w", c, err)
		}
	}
	if err := s.origin.Flush(); err != nil {
		return 0, fmt.Errorf("flush origin: %w", err)
	}
	if err := s.store.CommitMerge(n); err != nil {
		return 0, err
	}
	s.mu.Lock()
	for _, c := range chunks {
		delete(s.exceptions, c)
	}
	s.mu.Unlock()
	return n, nil
}

// mergeWrite writes through a merging device: chunks still in the COW are
// written there under their lock (a merge step copying them waits, or has
// finished and they are on the origin by the time the lock is ours);
// others go to the origin after the other snapshots got their copies.
func (t *snap) mergeWrite(p []byte, off int64) (int, error) {
	s := t.state
	err := t.forChunks(off, int64(len(p)), func(c exstore.Chunk, coff, pos, n int64) error {
		lk := s.lock(c)
		lk.Lock()
		to, ok := s.lookup(c)
		if ok {
			_, err := t.cow.WriteAt(p[pos:pos+n], int64(to)*s.chunkBytes+coff)
			lk.Unlock()
			return err
		}
		lk.Unlock()
		o := int64(c)*s.chunkBytes + coff
		prepareWrite(s.reg, s.origin, o, n, s)
		_, err := t.origin.WriteAt(p[pos:pos+n], o)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
