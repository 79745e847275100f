package image

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
	"unsafe"
)

var errEOF = io.EOF

// Txn is one checkpoint being written. Its methods are for one goroutine.
type Txn struct {
	im  *Image
	h   header // the image's geometry and journal id
	seq uint64

	off     int64  // journal offset of the segment being gathered
	buf     []byte // descriptor, then data; 4096-aligned
	entries []entry
	data    int64 // padded data bytes in buf

	// Full segments are written in the background, up to two at a time,
	// while the next one is gathered.
	free chan []byte // buffers whose write has ended
	wg   sync.WaitGroup
	mu   sync.Mutex
	werr error // the first failed segment write

	// inPlace: the first checkpoint, written straight into the image.
	inPlace bool

	// kept holds the written segments while they fit in the apply
	// cache, so that applying them needs no read of the journal.
	kept      []segment
	keptBytes int64
	keeping   bool

	bytes int64
	seen  map[int64]struct{}
	err   error // sticky: the first failure
	done  bool
}

// segment is a written segment kept in memory.
type segment struct {
	d    desc
	data []byte
}

// buffers is how many segment buffers a Txn has: one being gathered,
// the rest being written.
const buffers = 3

// Begin starts checkpoint seq, which must be Last().Seq+1. It waits for
// the previous checkpoint's apply; one that failed (ErrNotApplied) is
// tried again first.
func (im *Image) Begin(seq uint64) (*Txn, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.waitApply()
	switch {
	case im.closed:
		return nil, ErrClosed
	case im.dead:
		return nil, im.unappl
	case im.txn != nil:
		return nil, fmt.Errorf("begin checkpoint %d: checkpoint %d is still open (commit or abort it first)", seq, im.txn.seq)
	case seq != im.h.Committed+1:
		return nil, fmt.Errorf("begin checkpoint %d: the last complete checkpoint is %d, so the next must be %d", seq, im.h.Committed, im.h.Committed+1)
	}
	if im.h.Committed > im.h.Applied {
		if err := im.apply(); err != nil {
			return nil, fmt.Errorf("begin checkpoint %d: %w", seq, err)
		}
	}
	inPlace := im.h.Committed == 0
	if inPlace {
		if err := im.beginFirst(); err != nil {
			return nil, fmt.Errorf("begin checkpoint %d: %w", seq, err)
		}
	}
	t := &Txn{im: im, h: im.h, seq: seq, off: dataStart, free: make(chan []byte, buffers), seen: map[int64]struct{}{},
		inPlace: inPlace, keeping: im.cache > 0 && !inPlace}
	for len(im.bufs) < buffers {
		im.bufs = append(im.bufs, alignedBuf(descSize+im.seg))
	}
	t.buf = im.bufs[0]
	for _, b := range im.bufs[1:] {
		t.free <- b
	}
	im.bufs = nil
	im.txn = t
	return t, nil
}

// beginFirst prepares the image for the first checkpoint, written in
// place: it records that in the header, or, when a first checkpoint was
// already begun and not committed, zeroes what that one wrote.
func (im *Image) beginFirst() error {
	if im.h.Flags&flagFirst != 0 {
		if err := zeroDev(im.image, im.size); err != nil {
			return fmt.Errorf("zero %s after an interrupted first checkpoint: %w", im.names[0], err)
		}
		return nil
	}
	h := im.h
	h.Flags |= flagFirst
	if err := im.writeHeader(h); err != nil {
		im.broken(err)
		return err
	}
	return nil
}

// waitApply waits, with im.mu write-held (it is released meanwhile),
// until no background apply runs.
func (im *Image) waitApply() {
	for im.applying != nil {
		ch := im.applying
		im.mu.Unlock()
		<-ch
		im.mu.Lock()
	}
}

// Seq is the checkpoint the transaction writes.
func (t *Txn) Seq() uint64 { return t.seq }

// Put adds the contents of chunk (its index) to the checkpoint; data is
// Chunk() bytes, or fewer for the short last chunk of an image whose size
// is not a multiple of the chunk. A chunk put twice keeps the later data.
// Put does not retain data. After a failed Put the Txn can only be
// aborted (or committed, which then fails and aborts it).
func (t *Txn) Put(chunk int64, data []byte) error {
	if err := t.usable(); err != nil {
		return err
	}
	h := t.h
	if chunk < 0 || chunk >= h.chunkCount() {
		return fmt.Errorf("checkpoint %d: chunk %d is outside the image's %d chunks", t.seq, chunk, h.chunkCount())
	}
	if want := min(h.Chunk, h.Size-chunk*h.Chunk); int64(len(data)) != want {
		return fmt.Errorf("checkpoint %d: chunk %d is %d bytes, want %d", t.seq, chunk, len(data), want)
	}
	if _, again := t.seen[chunk]; again && t.inPlace {
		// Its earlier data may be in a write still in flight: let that
		// end first, so that the later data wins.
		if len(t.entries) > 0 {
			if err := t.writeSegment(); err != nil {
				return err
			}
		}
		t.wg.Wait()
	}
	e := entry{Chunk: chunk, Len: int64(len(data))}
	if err := t.room(e.padded()); err != nil {
		return err
	}
	p := t.buf[descSize+t.data : descSize+t.data+e.padded()]
	if unsafe.SliceData(p) != unsafe.SliceData(data) { // else Buffer's room: in place already
		copy(p, data)
	}
	clear(p[e.Len:])
	if !t.inPlace {
		// In place (the first checkpoint) nothing stores the CRC.
		e.CRC = crc(p[:e.Len])
	}
	t.entries = append(t.entries, e)
	t.data += e.padded()
	t.bytes += e.Len
	t.seen[chunk] = struct{}{}
	return nil
}

// Buffer returns room for the data of the next chunk Put, n bytes (at
// most Chunk()) where the transaction would copy them: a caller that
// reads a chunk into it and passes it to Put (whole, or its first bytes
// for a shorter chunk) saves Put's copy. It stays valid until the next
// Put, Buffer, Commit or Abort; a caller that does not Put it just asks
// again.
func (t *Txn) Buffer(n int64) ([]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if n <= 0 || n > t.h.Chunk {
		return nil, fmt.Errorf("checkpoint %d: a buffer of %d bytes, want 1 to the chunk size %d", t.seq, n, t.h.Chunk)
	}
	if err := t.room(roundUp(n, align)); err != nil {
		return nil, err
	}
	return t.buf[descSize+t.data : descSize+t.data+n], nil
}

// room makes room for padded more data bytes in the segment being
// gathered, handing it to its write first when they do not fit.
func (t *Txn) room(padded int64) error {
	if len(t.entries) == maxEntries || (len(t.entries) > 0 && t.data+padded > int64(len(t.buf))-descSize) {
		if err := t.writeSegment(); err != nil {
			return err
		}
	}
	if need := descSize + t.data + padded; need > int64(len(t.buf)) {
		nb := alignedBuf(need) // a chunk larger than a segment: one per segment
		copy(nb, t.buf[:descSize+t.data])
		t.buf = nb
	}
	return nil
}

func (t *Txn) usable() error {
	if t.done {
		return fmt.Errorf("checkpoint %d is already committed or aborted", t.seq)
	}
	if t.err == nil {
		t.mu.Lock()
		t.err = t.werr
		t.mu.Unlock()
	}
	return t.err
}

// writeSegment hands the gathered chunks to a background write as one
// segment and takes a free buffer for the next.
func (t *Txn) writeSegment() error {
	d := desc{Seq: t.seq, JournalID: t.h.JournalID, Data: t.data, Entries: t.entries}
	d.encode(t.buf)
	buf, off := t.buf[:descSize+t.data], t.off
	keep := t.keeping && t.keptBytes+t.data <= t.im.cache
	if keep {
		d.Entries = slices.Clone(d.Entries)
		t.kept = append(t.kept, segment{d, buf[descSize:]})
		t.keptBytes += t.data
	} else {
		t.kept, t.keeping = nil, false
	}
	t.off += descSize + t.data
	t.entries, t.data = t.entries[:0], 0
	write := func() error { return writeFull(t.im.journal, buf, off) }
	name := t.im.names[1]
	if t.inPlace {
		d.Entries = slices.Clone(d.Entries)
		write = func() error { return writeEntries(t.im.image, t.h, d, buf[descSize:]) }
		name = t.im.names[0]
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := write(); err != nil {
			t.mu.Lock()
			if t.werr == nil {
				t.werr = fmt.Errorf("checkpoint %d failed, checkpoint %d is intact: write %s: %w", t.seq, t.seq-1, name, err)
			}
			t.mu.Unlock()
		}
		if keep {
			buf = nil // the apply reads it: the next segment takes a new one
		}
		t.free <- buf[:cap(buf)]
	}()
	if t.buf = <-t.free; t.buf == nil {
		t.buf = alignedBuf(descSize + t.im.seg)
	}
	return t.usable()
}

// finish waits for the segment writes and gives the buffers back.
func (t *Txn) finish() {
	t.wg.Wait()
	if t.buf == nil {
		return
	}
	bufs := [][]byte{t.buf}
	for len(t.free) > 0 {
		if b := <-t.free; b != nil {
			bufs = append(bufs, b)
		}
	}
	t.buf = nil
	t.im.mu.Lock()
	t.im.bufs = bufs
	t.im.mu.Unlock()
}

// Commit makes the checkpoint durable and returns it, stamped at. From
// the moment it returns, a power loss at any instant leaves an image that
// Open yields as this checkpoint or a later one. The chunks are then
// copied into the raw image in the background: ReadAt, Begin, Apply and
// Close wait for that, and if it fails ReadAt and Apply say so with
// ErrNotApplied, and the next Begin or Open tries again. Any error of
// Commit leaves the previous checkpoint as Last() and ends the Txn, as
// Abort does.
func (t *Txn) Commit(at time.Time) (Checkpoint, error) {
	if t.done {
		return Checkpoint{}, t.usable()
	}
	cp, err := t.commit(at)
	if err != nil {
		t.Abort()
	}
	return cp, err
}

func (t *Txn) commit(at time.Time) (Checkpoint, error) {
	if err := t.usable(); err != nil {
		return Checkpoint{}, err
	}
	im := t.im
	fail := func(err error) (Checkpoint, error) {
		t.err = fmt.Errorf("checkpoint %d failed, checkpoint %d is intact: %w", t.seq, t.seq-1, err)
		return Checkpoint{}, t.err
	}
	if len(t.entries) > 0 {
		if err := t.writeSegment(); err != nil {
			return Checkpoint{}, err
		}
	}
	t.finish()
	if err := t.usable(); err != nil {
		return Checkpoint{}, err
	}
	if t.inPlace {
		if err := im.image.Flush(); err != nil {
			return fail(fmt.Errorf("flush %s: %w", im.names[0], err))
		}
	} else if t.off > dataStart {
		if err := im.journal.Flush(); err != nil {
			return fail(fmt.Errorf("flush %s: %w", im.names[1], err))
		}
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed || im.txn != t {
		return fail(ErrClosed)
	}
	h := im.h
	h.Committed, h.End = t.seq, t.off
	h.Time, h.Bytes, h.Chunks = at.UnixNano(), t.bytes, int64(len(t.seen))
	if t.inPlace {
		h.Flags &^= flagFirst
		h.End = dataStart
	}
	if h.End == dataStart {
		h.Applied = t.seq // nothing to apply
	}
	if err := im.writeHeader(h); err != nil {
		// The new header may or may not have reached the media; until a
		// later header is durable, Open may find either checkpoint.
		im.broken(err)
		return fail(err)
	}
	t.done, im.txn = true, nil
	if im.h.Committed > im.h.Applied {
		im.startApply(t.kept)
	}
	return im.h.last(), nil
}

// broken is called when a header write failed: what is on the media is
// unknown, so the image refuses further checkpoints until reopened.
func (im *Image) broken(err error) {
	im.unappl = fmt.Errorf("%w: writing the journal header failed (%v); reopen the image to find which checkpoint it holds", ErrNotApplied, err)
	im.dead = true
}

// Abort drops the checkpoint; the image stays at Last(). Segments already
// written are ignored: only a header names what the journal holds.
func (t *Txn) Abort() error {
	if t.done {
		return nil
	}
	t.done = true
	t.finish()
	im := t.im
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.txn == t {
		im.txn = nil
	}
	return nil
}

// Apply waits for the background apply of the last checkpoint, or copies
// a committed checkpoint whose apply failed into the image now, and
// returns once the image holds Last() durably.
func (im *Image) Apply() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.waitApply()
	if im.closed {
		return ErrClosed
	}
	if im.dead {
		return im.unappl
	}
	if im.h.Committed > im.h.Applied {
		return im.apply()
	}
	return nil
}

// startApply applies the committed checkpoint in the background; im.mu
// is write-held. Until it ends the apply owns both devices: every other
// user of them waits for im.applying.
func (im *Image) startApply(kept []segment) {
	done := make(chan struct{})
	im.applying = done
	h := im.h
	go func() {
		nh, err := im.replay(h, kept)
		im.mu.Lock()
		defer im.mu.Unlock()
		im.h = nh
		im.setApplied(err)
		im.applying = nil
		close(done)
	}()
}

// apply copies the committed checkpoints from the journal into the image
// and records that, after checking every segment. im.mu is write-held.
func (im *Image) apply() error {
	nh, err := im.replay(im.h, nil)
	im.h = nh
	im.setApplied(err)
	return im.unappl
}

func (im *Image) setApplied(err error) {
	if err != nil {
		im.unappl = fmt.Errorf("%w: %w", ErrNotApplied, err)
		return
	}
	im.unappl = nil
}

// replay applies the checkpoints h says are committed and not applied,
// checking all of them first, and returns the header that records them
// applied (h itself if that was not written). kept, if not nil, is the
// committed checkpoint's segments still in memory: they are applied
// from there, without reading the journal back.
func (im *Image) replay(h header, kept []segment) (header, error) {
	if kept != nil {
		for _, s := range kept {
			if err := writeEntries(im.image, h, s.d, s.data); err != nil {
				return h, fmt.Errorf("apply to %s: %w", im.names[0], err)
			}
		}
	} else if err := im.replayJournal(h); err != nil {
		return h, err
	}
	if err := im.image.Flush(); err != nil {
		return h, fmt.Errorf("flush %s: %w", im.names[0], err)
	}
	nh := h
	nh.Applied, nh.End = h.Committed, dataStart
	written, err := im.putHeader(h, nh)
	if err != nil {
		return h, err
	}
	return written, nil
}

// replayJournal checks every committed segment, then reads them again and
// writes them into the image, each write overlapping the next read.
func (im *Image) replayJournal(h header) error {
	ahead := descSize + im.seg
	if err := scan(im.journal, h, im.names[1], ahead, nil); err != nil {
		return err
	}
	var pending chan error
	wait := func() error {
		if pending == nil {
			return nil
		}
		err := <-pending
		pending = nil
		return err
	}
	err := scan(im.journal, h, im.names[1], ahead, func(d desc, data []byte) error {
		if err := wait(); err != nil {
			return err
		}
		pending = make(chan error, 1)
		go func(ch chan error) { ch <- writeEntries(im.image, h, d, data) }(pending)
		return nil
	})
	if werr := wait(); err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("apply to %s: %w", im.names[0], err)
	}
	return nil
}

// scan reads the segments of h's committed checkpoints and checks each
// (magic, journal id, sequence, bounds, every CRC), calling fn, if not
// nil, with each checked segment's descriptor and data. It reads each
// segment in one read of up to ahead bytes when it can, into two buffers
// in turn: fn may go on using the data of one segment (in the background)
// until its next call returns. Its errors wrap ErrCorrupt, except those
// of fn and of reading.
func scan(journal Dev, h header, name string, ahead int64, fn func(desc, []byte) error) error {
	bad := func(off int64, format string, a ...any) error {
		return fmt.Errorf("%w: %s: checkpoint %d is committed but the journal at byte %d is %s; the image still holds checkpoint %d whole: restore it from a backup, or delete the journal and open the image as checkpoint %d's (it is a plain raw image)",
			ErrCorrupt, name, h.Committed, off, fmt.Sprintf(format, a...), h.Applied, h.Applied)
	}
	if size := journal.Size(); size < h.End {
		return bad(size, "missing: the journal is %d bytes, its header says %d (truncated)", size, h.End)
	}
	var bufs [2][]byte
	prev := h.Applied + 1
	for i, off := 0, int64(dataStart); off < h.End; i++ {
		if off+descSize > h.End {
			return bad(off, "a segment descriptor that does not fit before the end (%d)", h.End)
		}
		buf := bufs[i%2]
		if buf == nil {
			buf = alignedBuf(max(descSize, min(ahead, h.End-dataStart)))
		}
		n := max(descSize, min(int64(len(buf)), h.End-off))
		if err := readFull(journal, buf[:n], off); err != nil {
			return fmt.Errorf("read %s at %d: %w", name, off, err)
		}
		d, err := decodeDesc(buf[:descSize], h)
		if err != nil {
			return bad(off, "%v", err)
		}
		if d.Seq < prev || d.Seq > h.Committed {
			return bad(off, "a segment of checkpoint %d, want %d to %d", d.Seq, prev, h.Committed)
		}
		prev = d.Seq
		next := off + descSize + d.Data
		if next > h.End {
			return bad(off, "a segment running to byte %d, past the end (%d)", next, h.End)
		}
		if need := descSize + d.Data; need > n {
			if need > int64(len(buf)) {
				nb := alignedBuf(need)
				copy(nb, buf[:n])
				buf = nb
			}
			if err := readFull(journal, buf[n:need], off+n); err != nil {
				return fmt.Errorf("read %s at %d: %w", name, off+n, err)
			}
		}
		bufs[i%2] = buf
		data := buf[descSize : descSize+d.Data]
		var pos int64
		for i, e := range d.Entries {
			if got := crc(data[pos : pos+e.Len]); got != e.CRC {
				return bad(off+descSize+pos, "damaged: chunk %d (entry %d) has checksum %#08x, want %#08x", e.Chunk, i, got, e.CRC)
			}
			pos += e.padded()
		}
		if fn != nil {
			if err := fn(d, data); err != nil {
				return err
			}
		}
		off = next
	}
	return nil
}

// writeEntries writes a checked segment's chunks into the image, runs of
// consecutive chunks in one write each, up to writers runs at a time
// (runs are disjoint unless the segment holds a chunk twice; then they
// are written in order, so that the later data wins).
func writeEntries(image Dev, h header, d desc, data []byte) error {
	type run struct{ off, pos, n int64 }
	var runs []run
	var pos int64
	dup := make(map[int64]bool, len(d.Entries))
	twice := false
	for i := 0; i < len(d.Entries); {
		j, n := i+1, d.Entries[i].Len
		// Only the last chunk of the image can be short, and no chunk
		// follows it, so a run never goes on past padding.
		for j < len(d.Entries) && d.Entries[j].Chunk == d.Entries[j-1].Chunk+1 {
			n += d.Entries[j].Len
			j++
		}
		for _, e := range d.Entries[i:j] {
			twice = twice || dup[e.Chunk]
			dup[e.Chunk] = true
		}
		runs = append(runs, run{d.Entries[i].Chunk * h.Chunk, pos, n})
		pos += roundUp(n, align)
		i = j
	}
	workers := writers
	if twice {
		workers = 1
	}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(runs); i += workers {
				r := runs[i]
				if err := writeFull(image, data[r.pos:r.pos+r.n], r.off); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writers is how many image writes an apply has in flight.
const writers = 4
