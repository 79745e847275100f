package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// Config says what to checkpoint, where, and how often.
type Config struct {
	// Device is the volume; its live table must be memory with
	// write-protect faults (tmpfs or hugetlbfs regions), as many bytes
	// as Image.
	Device *dm.Device
	// Image receives the checkpoints. The engine does not close it.
	// Give it or Sink, not both.
	Image *image.Image
	// Sink receives the checkpoints in place of an Image: another
	// destination (an object store). The engine does not close it.
	Sink Sink
	// Interval between checkpoints taken on its own; 0: only on demand.
	// A tick finding nothing written since the last complete checkpoint
	// takes none.
	Interval time.Duration
	// BufferBytes caps the copy-on-write buffer that keeps the contents
	// of chunks written while a checkpoint is written back (0: 1 % of
	// the volume, at least MinBufferChunks chunks; a value below one
	// chunk is one chunk). When it is full, such writers wait.
	BufferBytes int64
	// InSync says the device's data equals the image's last checkpoint
	// and nothing has written to it since (it was just restored from the
	// image, and nothing maps it): the first checkpoint then writes only
	// what is written after Start, instead of every chunk.
	InSync bool
	// Log receives one line per checkpoint and failures (nil: none).
	Log *slog.Logger
}

// MinBufferChunks is the smallest default buffer, in chunks.
const MinBufferChunks = 4

// ErrClosed is returned by a Volume's methods after Close.
var ErrClosed = errors.New("checkpoints of this volume are stopped")

// ErrHung is Close's error when a write to the image did not return.
var ErrHung = errors.New("the checkpoint image does not answer")

// closeWait is how long Close waits for a checkpoint under way before
// it gives it up, and then for the write to the image under way.
var closeWait = 30 * time.Second

// Status is what a Volume reports: for `status`, `info` and metrics.
type Status struct {
	// Last is the newest complete checkpoint (Seq 0: none yet).
	Last     image.Checkpoint
	Interval time.Duration
	// Clean: nothing was written since Last's cut (Last holds the
	// volume's contents now), and no checkpoint is under way.
	Clean bool
	// InProgress: a checkpoint is being written back; InProgressSeq is
	// its sequence, InProgressChunks how many chunks it writes and
	// InProgressDone how many are written.
	InProgress                       bool
	InProgressSeq                    uint64
	InProgressChunks, InProgressDone int64
	// DirtyChunks were first written since the last cut (every chunk
	// until the first checkpoint after Start).
	DirtyChunks int64
	// Waiting counts the requests (Checkpoint, Persist) waiting for the
	// next cut.
	Waiting int
	// Checkpoints and Failures count those taken since Start;
	// WrittenBytes and WrittenChunks add up what the checkpoints wrote.
	Checkpoints, Failures       int64
	WrittenBytes, WrittenChunks int64
	// BufferUsed is the copy-on-write buffer's use now, BufferPeak its
	// most since Start, BufferCap its cap (Config.BufferBytes).
	BufferUsed, BufferPeak, BufferCap int64
	// BufferedChunks counts chunks copied into the buffer by writers
	// (each a write that changed a chunk before it was written back).
	BufferedChunks int64
	// BackpressureWaits counts writers that waited for room in a full
	// buffer, BackpressureTime how long they waited in all.
	BackpressureWaits int64
	BackpressureTime  time.Duration
	// LastCutTime is how long the last cut held the device (suspend to
	// resume), LastDuration how long the last checkpoint took from cut
	// to durable.
	LastCutTime, LastDuration time.Duration
	// LastError is why the last checkpoint failed (nil when it did not),
	// at LastErrorTime.
	LastError     error
	LastErrorTime time.Time
}

// Volume checkpoints one device into one image.
type Volume struct {
	dev   *dm.Device
	im    Sink
	log   *slog.Logger
	every time.Duration
	size  int64 // bytes
	chunk int64 // bytes
	n     int64 // chunks

	removeObserver func()

	// dirty holds the chunks first written since the last cut; written
	// by BeforeWrite (atomically, concurrently), swapped at the cut while
	// no BeforeWrite runs. ndirty counts its members.
	dirty  bitset
	ndirty atomic.Int64
	// all: every chunk is dirty (nothing tracked before Start); cleared
	// at the cut, under mu.
	all bool

	// pending: chunks of the checkpoint under way whose t_k contents are
	// not captured yet (invariant B); set at the cut, read without mu by
	// BeforeWrite, cleared under mu.
	pending bitset

	mu   sync.Mutex
	cond *sync.Cond // broadcast when a capture ends, room frees, a chunk turns urgent, a write-back fails
	// wb is the write-back under way (nil between checkpoints).
	wb *writeBack
	// Buffer accounting and the free buffers (each one chunk).
	bufUsed, bufPeak, bufCap int64
	free                     [][]byte

	// Rounds: next is the round the next cut serves (nil: none asked),
	// cur the one being written back.
	next, cur *round
	waiting   int // requests joined to next
	closed    bool
	wake      chan struct{}
	stop      chan struct{}
	giveUp    chan struct{} // closed by Close: the write-back under way stops
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	st Status // counters, under mu

	hooks testHooks
}

// testHooks let tests see into a checkpoint (export_test.go).
type testHooks struct {
	// AtCut runs inside the cut, the device suspended.
	AtCut func()
	// AfterPut runs after each chunk of checkpoint seq is Put (written
	// chunks so far), outside every lock.
	AfterPut func(seq uint64, written int64)
	// SkipSave breaks invariant B: writers no longer save a chunk's t_k
	// contents. Tests must catch it.
	SkipSave bool
}

// round is one checkpoint that requests wait for.
type round struct {
	done chan struct{}
	cp   image.Checkpoint
	err  error
}

// Start attaches dirty tracking to cfg.Device and starts the interval
// loop. The first checkpoint after Start writes every chunk (unless
// cfg.InSync).
func Start(cfg Config) (*Volume, error) { return start(cfg, testHooks{}) }

func start(cfg Config, hooks testHooks) (*Volume, error) {
	if cfg.Device == nil || (cfg.Image == nil) == (cfg.Sink == nil) {
		return nil, errors.New("checkpoint: a device and an image or a sink (one of them) are required")
	}
	dev, im := cfg.Device, cfg.Sink
	if cfg.Image != nil {
		im = imageSink{cfg.Image}
	}
	size, chunk := dev.Size(), im.Chunk()
	if size != im.Size() {
		return nil, fmt.Errorf("checkpoint %s: the volume is %d bytes, its image %d: give it an image of the volume's size", dev.Name(), size, im.Size())
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("checkpoint %s: interval %v is negative", dev.Name(), cfg.Interval)
	}
	exts, err := dev.Extents(0, size)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: checkpoints need a volume of memory: %w", dev.Name(), err)
	}
	if err := checkMemory(exts); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dev.Name(), err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &Volume{
		dev: dev, im: im, log: log.With("device", dev.Name()), every: cfg.Interval,
		size: size, chunk: chunk, n: (size + chunk - 1) / chunk,
		all: !cfg.InSync, hooks: hooks,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), giveUp: make(chan struct{}), done: make(chan struct{}),
	}
	v.cond = sync.NewCond(&v.mu)
	v.dirty, v.pending = newBitset(v.n), newBitset(v.n)
	v.bufCap = cfg.BufferBytes
	if v.bufCap == 0 {
		v.bufCap = max(size/100, MinBufferChunks*chunk)
	}
	v.bufCap = max(v.bufCap, chunk)
	v.st.Interval, v.st.BufferCap, v.st.Last = cfg.Interval, v.bufCap, im.Last()
	if v.all {
		v.ndirty.Store(v.n)
	}
	v.removeObserver, err = dev.SetWriteObserver(observer{v})
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dev.Name(), err)
	}
	go v.loop()
	return v, nil
}

// checkMemory refuses memory whose direct stores cannot be caught, and
// sources the write-back cannot read.
func checkMemory(exts []dm.Extent) error {
	for _, e := range exts {
		d, ok := e.Source.(backing.Device)
		if !ok {
			return fmt.Errorf("%s (%s) cannot be read as a device: %s", e.Path, e.Kind, keepOnMemory)
		}
		if !d.Capabilities().Has(backing.WPFault) {
			return fmt.Errorf("%s (%s) takes no write-protect faults, so direct stores to it cannot be tracked: %s", e.Path, e.Kind, keepOnMemory)
		}
		if _, ok := e.Source.(io.ReaderAt); !ok {
			return fmt.Errorf("%s (%s) cannot be read: %s", e.Path, e.Kind, keepOnMemory)
		}
	}
	return nil
}

// keepOnMemory is what checkMemory's errors tell the user to do.
const keepOnMemory = "keep the volume's memory on tmpfs or hugetlbfs"

// Checkpoint takes a checkpoint and waits for it to be durable.
// Concurrent callers share one. ctx ends the wait, not the checkpoint.
func (v *Volume) Checkpoint(ctx context.Context) (image.Checkpoint, error) {
	r, err := v.join()
	if err != nil {
		return image.Checkpoint{}, err
	}
	return r.wait(ctx)
}

// Persist returns when a checkpoint that includes every store made
// before the call is durable: at once if nothing was written since the
// last complete one, the one under way if nothing was written since its
// cut, the next one otherwise (shared with every caller meanwhile).
func (v *Volume) Persist(ctx context.Context) error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return ErrClosed
	}
	// No chunk was first written since the last cut (a store to a chunk
	// marks it before it lands), so every store made before now is in
	// the last cut's contents.
	if !v.all && v.ndirty.Load() == 0 {
		cur := v.cur
		v.mu.Unlock()
		if cur == nil {
			// The last cut's checkpoint is complete, or it failed and
			// its chunks are dirty again: none, so it wrote nothing new.
			return nil
		}
		_, err := cur.wait(ctx)
		return err
	}
	v.mu.Unlock()
	_, err := v.Checkpoint(ctx)
	return err
}

func (r *round) wait(ctx context.Context) (image.Checkpoint, error) {
	select {
	case <-r.done:
		return r.cp, r.err
	case <-ctx.Done():
		return image.Checkpoint{}, fmt.Errorf("waiting for a checkpoint (it goes on): %w", ctx.Err())
	}
}

// join returns the round the next cut serves, asking for one.
func (v *Volume) join() (*round, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, ErrClosed
	}
	if v.next == nil {
		v.next = &round{done: make(chan struct{})}
	}
	v.waiting++
	select {
	case v.wake <- struct{}{}:
	default:
	}
	return v.next, nil
}

// loop is the one worker: it runs each asked-for round and the interval.
func (v *Volume) loop() {
	defer close(v.done)
	var tick <-chan time.Time
	if v.every > 0 {
		t := time.NewTicker(v.every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-v.stop:
			return
		case <-v.wake:
		case <-tick:
			if v.clean() {
				continue
			}
			if _, err := v.join(); err != nil {
				return
			}
		}
		v.mu.Lock()
		if v.closed {
			// Close fails the round still waiting.
			v.mu.Unlock()
			return
		}
		r := v.next
		v.next, v.cur, v.waiting = nil, r, 0
		v.mu.Unlock()
		if r == nil {
			continue
		}
		r.cp, r.err = v.take()
		v.mu.Lock()
		v.cur = nil
		v.mu.Unlock()
		close(r.done)
	}
}

// clean reports whether nothing was written since the last complete
// checkpoint's cut.
func (v *Volume) clean() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cleanLocked()
}

// cleanLocked is clean with mu held (Status.Clean).
func (v *Volume) cleanLocked() bool { return !v.all && v.ndirty.Load() == 0 && v.cur == nil }

// Status reports the volume's checkpoints.
func (v *Volume) Status() Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.st
	s.Clean = v.cleanLocked()
	s.DirtyChunks = v.ndirty.Load()
	if v.all {
		s.DirtyChunks = v.n
	}
	s.BufferUsed, s.BufferPeak, s.Waiting = v.bufUsed, v.bufPeak, v.waiting
	if wb := v.wb; wb != nil {
		s.InProgress, s.InProgressSeq = true, wb.seq
		s.InProgressChunks, s.InProgressDone = wb.total, wb.written
	}
	return s
}

// Close stops the interval, waits for a checkpoint under way, fails the
// requests waiting for a later one, and detaches tracking. A checkpoint
// still being written after closeWait is given up at its next chunk
// (the image keeps the last complete one); a write to the image that
// has not returned closeWait later (a hung disk) is left behind: Close
// returns ErrHung, and the image must not be closed under it.
func (v *Volume) Close() error {
	v.closeOnce.Do(func() {
		v.mu.Lock()
		v.closed = true
		v.mu.Unlock()
		close(v.stop)
		select {
		case <-v.done:
		case <-time.After(closeWait):
			close(v.giveUp)
			select {
			case <-v.done:
			case <-time.After(closeWait):
				v.closeErr = fmt.Errorf("checkpoint %s: %w: a write to its image has not returned in %v (a hung disk?): the checkpoint under way is left unfinished, and the image keeps the last complete one", v.dev.Name(), ErrHung, 2*closeWait)
				v.log.Error("checkpoints stopped with a write to the image still under way", "err", v.closeErr)
			}
		}
		v.mu.Lock()
		r := v.next
		v.next = nil
		v.mu.Unlock()
		if r != nil {
			r.err = ErrClosed
			close(r.done)
		}
		v.removeObserver()
	})
	return v.closeErr
}
