package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// writeBack is checkpoint k being written back (see invariant B in
// doc.go). Its fields are under Volume.mu, except todo and exts, fixed at
// the cut.
type writeBack struct {
	seq  uint64
	at   time.Time   // t_k
	todo bitset      // D_k: each chunk is Put once
	exts []dm.Extent // the device's memory at the cut
	// whole: D_k is every chunk (the first checkpoint after Start), read
	// through the memory's files (see readMem).
	whole bool

	cursor  int64            // the chunks of todo below it are handled
	reading map[int64]bool   // chunks being captured now
	saved   map[int64][]byte // t_k contents captured by writers, not yet Put
	urgent  []int64          // chunks writers wait on, the buffer being full
	total   int64            // chunks in todo
	written int64            // chunks Put
	err     error            // the write-back stops: pending is cleared
}

// take cuts the device and writes the cut back: checkpoint k.
func (v *Volume) take() (image.Checkpoint, error) {
	start := time.Now()
	seq := v.im.Last().Seq + 1
	txn, err := v.im.Begin(seq)
	if err != nil {
		return v.failed(fmt.Errorf("checkpoint %d: %w", seq, err))
	}
	wb := &writeBack{seq: seq, reading: map[int64]bool{}, saved: map[int64][]byte{}}
	var cutErr error
	cut := false
	cutStart := time.Now()
	qerr := v.dev.Quiesce(func(live []dm.Extent) {
		// The device is suspended: no BeforeWrite runs and no store
		// reaches its memory until this returns (invariant A).
		if cutErr = v.checkExtents(live); cutErr != nil {
			return
		}
		cut = true
		wb.at, wb.exts, wb.todo = time.Now(), live, newBitset(v.n)
		if v.all { // written under mu, and only here: read without it
			wb.whole = true
			wb.todo.fill(v.n)
			for w := range v.dirty {
				v.dirty[w].Store(0)
			}
		} else {
			for w := range v.dirty {
				wb.todo[w].Store(v.dirty[w].Swap(0))
			}
		}
		for w := range wb.todo {
			v.pending[w].Store(wb.todo[w].Load())
		}
		wb.total = wb.todo.count()
		v.mu.Lock()
		v.all = false
		v.ndirty.Store(0)
		v.wb = wb
		v.mu.Unlock()
		if v.hooks.AtCut != nil {
			v.hooks.AtCut()
		}
	})
	cutTime := time.Since(cutStart)
	v.mu.Lock()
	v.st.LastCutTime = cutTime
	v.mu.Unlock()
	if !cut {
		txn.Abort()
		return v.failed(fmt.Errorf("checkpoint %d: cut: %w", seq, errors.Join(cutErr, qerr)))
	}
	if qerr != nil {
		// The cut was made (the function ran); only letting the device
		// run again failed. Its memory stands still: write it back.
		v.log.Error("checkpoint: the device stays suspended after the cut", "seq", seq, "err", qerr)
	}
	if err := v.writeBack(wb, txn); err != nil {
		return v.abort(wb, txn, err)
	}
	cp, err := txn.Commit(wb.at)
	if err != nil && !(errors.Is(err, image.ErrNotApplied) && cp.Seq == seq) {
		return v.abort(wb, txn, err)
	}
	v.mu.Lock()
	v.wb = nil
	v.st.Last = cp
	v.st.Checkpoints++
	v.st.WrittenBytes += cp.Bytes
	v.st.WrittenChunks += cp.Chunks
	v.st.LastDuration = time.Since(start)
	v.st.LastError, v.st.LastErrorTime = err, time.Time{}
	if err != nil {
		v.st.LastErrorTime = time.Now()
	}
	v.mu.Unlock()
	if err != nil {
		v.log.Warn("checkpoint durable, but copying it into the image failed (the next checkpoint or open applies it)", "seq", seq, "err", err)
	}
	v.log.Info("checkpoint", "seq", cp.Seq, "chunks", cp.Chunks, "bytes", cp.Bytes, "cut", cutTime, "took", time.Since(start))
	return cp, nil
}

// writeBack Puts every chunk of wb.todo with its t_k contents. A chunk
// it captures itself is read from memory straight into the room
// txn.Buffer gives, so Put copies nothing. The first checkpoint of an
// image skips chunks of zeroes: the image reads as zeroes until then
// (image.Create).
func (v *Volume) writeBack(wb *writeBack, txn Txn) error {
	var zero []byte
	if wb.seq == 1 {
		zero = make([]byte, v.chunk)
	}
	for {
		select {
		case <-v.giveUp: // Close waited long enough
			return fmt.Errorf("given up unfinished (%d of %d chunks written): %w", wb.written, wb.total, ErrClosed)
		default:
		}
		own, err := txn.Buffer(v.chunk)
		if err != nil {
			return err
		}
		c, data, saved, err := v.nextChunk(wb, own)
		if err != nil || c < 0 {
			return err
		}
		if zero == nil || !bytes.Equal(data, zero[:len(data)]) {
			err = txn.Put(c, data)
		}
		v.mu.Lock()
		wb.written++
		written := wb.written
		if saved {
			v.releaseLocked(data)
		}
		v.mu.Unlock()
		if err != nil {
			return err
		}
		if v.hooks.AfterPut != nil {
			v.hooks.AfterPut(wb.seq, written)
		}
	}
}

// nextChunk returns the next chunk to Put and its t_k contents: one a
// writer waits on first, else the next of todo in order, captured into
// own unless a writer saved it (saved: data is a buffer to release). It
// returns c < 0 when every chunk of todo was returned.
func (v *Volume) nextChunk(wb *writeBack, own []byte) (c int64, data []byte, saved bool, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		if wb.err != nil {
			return -1, nil, false, wb.err
		}
		for len(wb.urgent) > 0 {
			c := wb.urgent[0]
			wb.urgent = wb.urgent[1:]
			if v.pending.has(c) && !wb.reading[c] {
				data, err := v.captureLocked(wb, c, own)
				return c, data, false, err
			}
		}
		c := wb.todo.next(wb.cursor)
		if c < 0 {
			return -1, nil, false, nil
		}
		if data := wb.saved[c]; data != nil {
			delete(wb.saved, c)
			wb.cursor = c + 1
			return c, data, true, nil
		}
		if !v.pending.has(c) {
			// Captured for an urgent writer, and Put then.
			wb.cursor = c + 1
			continue
		}
		if wb.reading[c] {
			// A writer is saving it; it is in saved when the wait ends.
			v.cond.Wait()
			continue
		}
		wb.cursor = c + 1
		data, err := v.captureLocked(wb, c, own)
		return c, data, false, err
	}
}

// captureLocked reads chunk c's memory into buf while reading[c] holds
// its writers, then clears its pending bit (invariant B). mu is held,
// and released while the memory is read.
func (v *Volume) captureLocked(wb *writeBack, c int64, buf []byte) ([]byte, error) {
	buf = buf[:v.chunkSize(c)]
	wb.reading[c] = true
	v.mu.Unlock()
	err := readMem(wb.exts, buf, c*v.chunk, wb.whole)
	v.mu.Lock()
	delete(wb.reading, c)
	if err != nil {
		err = fmt.Errorf("read chunk %d of the volume's memory: %w", c, err)
		v.stopLocked(wb, err)
		return nil, err
	}
	v.pending.remove(c)
	v.cond.Broadcast()
	return buf, nil
}

// observer is a Volume as its device's dm.WriteObserver.
type observer struct{ v *Volume }

func (o observer) BeforeWrite(off, n int64) { o.v.beforeWrite(off, n) }

// Granularity is the unit dirty tracking works in: the image's chunk.
func (o observer) Granularity() int64 { return o.v.chunk }

// beforeWrite is told of every change of the device before it happens:
// it marks the chunks dirty, and saves the t_k contents of those the
// checkpoint under way still needs.
func (v *Volume) beforeWrite(off, n int64) {
	for c := off / v.chunk; c <= (off+n-1)/v.chunk && c < v.n; c++ {
		v.mark(c)
		if v.pending.has(c) && !v.hooks.SkipSave {
			v.save(c)
		}
	}
}

// MarkDirty makes the next checkpoint write [off, off+n) of the volume:
// for changes of its memory that did not go through the device, which
// tracking cannot see (a merge writing the device below it).
func (v *Volume) MarkDirty(off, n int64) {
	off, end := max(off, 0), min(off+n, v.size)
	for c := off / v.chunk; off < end && c <= (end-1)/v.chunk; c++ {
		v.mark(c)
	}
}

// mark adds chunk c to the dirty set.
func (v *Volume) mark(c int64) {
	if !v.dirty.has(c) && v.dirty.add(c) {
		v.ndirty.Add(1)
	}
}

// save captures chunk c's t_k contents into the buffer before a write
// changes it, waiting while the buffer is full (invariant C).
func (v *Volume) save(c int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	wb := v.wb
	var waited time.Time
	defer func() {
		if !waited.IsZero() {
			v.st.BackpressureTime += time.Since(waited)
		}
	}()
	for wb != nil && wb.err == nil && v.pending.has(c) {
		if wb.reading[c] {
			v.cond.Wait()
			continue
		}
		if v.bufUsed+v.chunk > v.bufCap {
			if waited.IsZero() {
				waited = time.Now()
				v.st.BackpressureWaits++
			}
			if !slices.Contains(wb.urgent, c) {
				wb.urgent = append(wb.urgent, c)
			}
			v.cond.Wait()
			continue
		}
		buf := v.takeBufLocked()
		data, err := v.captureLocked(wb, c, buf)
		if err != nil || wb.err != nil {
			v.releaseLocked(buf)
			return
		}
		wb.saved[c] = data
		v.st.BufferedChunks++
	}
}

// stopLocked ends wb's write-back with err: nothing more is captured,
// so writers go on, and the saved buffers are released.
func (v *Volume) stopLocked(wb *writeBack, err error) {
	if wb.err == nil {
		wb.err = err
	}
	for w := range v.pending {
		v.pending[w].Store(0)
	}
	for c, b := range wb.saved {
		v.releaseLocked(b)
		delete(wb.saved, c)
	}
	v.cond.Broadcast()
}

// abort ends a failed write-back: the transaction is dropped and D_k is
// dirty again, so the next checkpoint writes it (invariant A).
func (v *Volume) abort(wb *writeBack, txn Txn, err error) (image.Checkpoint, error) {
	txn.Abort()
	v.mu.Lock()
	v.stopLocked(wb, err)
	v.wb = nil
	v.mu.Unlock()
	for w := range wb.todo {
		x := wb.todo[w].Load()
		old := v.dirty[w].Or(x)
		v.ndirty.Add(int64(bits.OnesCount64(x &^ old)))
	}
	return v.failed(fmt.Errorf("checkpoint %d: %w", wb.seq, err))
}

// failed records a failed checkpoint.
func (v *Volume) failed(err error) (image.Checkpoint, error) {
	v.mu.Lock()
	v.st.Failures++
	v.st.LastError, v.st.LastErrorTime = err, time.Now()
	v.mu.Unlock()
	if errors.Is(err, ErrClosed) {
		v.log.Info("checkpoint given up: the checkpoints stop; the previous one stays the last complete", "err", err)
	} else {
		v.log.Error("checkpoint failed; the previous one stays the last complete", "err", err)
	}
	return image.Checkpoint{}, err
}

// checkExtents checks that the memory at a cut covers the device as at
// Start.
func (v *Volume) checkExtents(live []dm.Extent) error {
	var end int64
	for _, e := range live {
		if e.Off != end {
			return fmt.Errorf("the volume's memory has a gap at byte %d: load a table of memory over the whole volume, or disable its checkpoints", end)
		}
		end += e.Len
	}
	if end != v.size {
		return fmt.Errorf("the volume is %d bytes now, its image %d: checkpoints stop; disable and enable them again with an image of the new size", end, v.size)
	}
	return checkMemory(live)
}

// readMem reads device bytes [off, off+len(p)) from the memory behind
// them (exts, sorted, covering the device). viaFile reads through the
// memory's file where it has one (backing.FileReader: pread on tmpfs),
// for a checkpoint of the whole volume: a load through the daemon's
// mapping first maps each page there (8-16 µs per 4 KiB page on the
// development VM; on tmpfs a hole gets a page of its own), which held a
// first checkpoint to a third of the disk's speed. Once mapped, a page
// is read at least as fast through the mapping as with pread
// (BenchmarkWriteBack, dirty=25%: 0.78-1.00 of its peer against 0.73-0.85
// in alternating runs), so later checkpoints, which read what the earlier
// ones mapped, keep to it.
func readMem(exts []dm.Extent, p []byte, off int64, viaFile bool) error {
	i := sort.Search(len(exts), func(i int) bool { return exts[i].Off+exts[i].Len > off })
	for len(p) > 0 {
		if i >= len(exts) || exts[i].Off > off {
			return fmt.Errorf("no memory behind byte %d", off)
		}
		e := exts[i]
		k := min(int64(len(p)), e.Off+e.Len-off)
		src, at := e.Source.(backing.Device), e.SourceOff+off-e.Off
		var err error
		if viaFile {
			_, err = backing.ReadFileAt(src, p[:k], at)
		} else {
			_, err = src.ReadAt(p[:k], at)
		}
		if err != nil {
			return err
		}
		p, off, i = p[k:], off+k, i+1
	}
	return nil
}

// chunkSize is chunk c's length (the last may be short).
func (v *Volume) chunkSize(c int64) int64 { return min(v.chunk, v.size-c*v.chunk) }

// takeBufLocked takes a chunk buffer and counts it in the buffer's use.
func (v *Volume) takeBufLocked() []byte {
	v.bufUsed += v.chunk
	v.bufPeak = max(v.bufPeak, v.bufUsed)
	if k := len(v.free); k > 0 {
		b := v.free[k-1]
		v.free = v.free[:k-1]
		return b
	}
	return make([]byte, v.chunk)
}

// releaseLocked gives back a buffer takeBufLocked took.
func (v *Volume) releaseLocked(b []byte) {
	v.bufUsed -= v.chunk
	if int64(len(v.free))*v.chunk < v.bufCap {
		v.free = append(v.free, b[:cap(b)])
	}
	v.cond.Broadcast()
}
