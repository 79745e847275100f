package backup

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Checkpoints of a memory volume in the object store (docs/checkpoint.md,
// "Checkpoints to S3"): the checkpoint engine writes back the chunks that
// changed, each stored as a content-addressed object (chunks/xx/SHA256,
// shared with backups at the same place) unless it is there already, and
// then the manifest of checkpoint seq, checkpoints/VOLUME/SEQ.json: the
// previous manifest with this checkpoint's chunks laid over it, so that
// any manifest alone describes the whole volume. The manifest is PUT
// only once every object it names is stored, and a PUT is atomic: a
// crash at any instant leaves the newest complete manifest as the newest
// checkpoint.

// CheckpointState describes one complete checkpoint.
type CheckpointState struct {
	Seq    uint64 // 1, 2, ...; 0: none yet
	Time   time.Time
	Bytes  int64 // bytes written back by it
	Chunks int64 // chunks written back by it
}

// Checkpoints is one volume's checkpoints at a place of the store. Its
// methods may be called from any goroutine; at most one CheckpointTxn is
// open at a time.
type Checkpoints struct {
	s           *Store
	vol         string
	size, chunk int64
	workers     int
	ctx         context.Context
	cancel      context.CancelFunc

	mu   sync.Mutex
	last *Manifest // nil: none yet
	have map[string]int64
	txn  *CheckpointTxn

	failPut func(key string) error // tests: fail an upload
}

// checkpointsDir is where volume vol's manifests live.
func checkpointsDir(vol string) string { return "checkpoints/" + vol + "/" }

// seqName is checkpoint seq's manifest name: zero-padded, so that names
// sort as numbers do.
func seqName(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// OpenCheckpoints opens the checkpoints of volume vol. Its newest
// manifest that downloads and verifies is Last. size and chunk are the
// volume's bytes and the chunk of write-back: with a checkpoint there,
// size must be its size (0: any) and chunk is taken from it; without
// one they are those of the first checkpoint, required with create (0:
// only reading: Size is 0, and there is nothing to read).
func (s *Store) OpenCheckpoints(ctx context.Context, vol string, size, chunk int64, create bool) (*Checkpoints, error) {
	if !nameRE.MatchString(vol) {
		return nil, fmt.Errorf("volume name %q cannot name checkpoints in an object store: use letters, digits, '.', '_', '+', '-'", vol)
	}
	keys, err := s.list(ctx, checkpointsDir(vol))
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for k := range keys {
		n, ok := strings.CutSuffix(strings.TrimPrefix(k, checkpointsDir(vol)), ".json")
		if seq, err := strconv.ParseUint(n, 10, 64); ok && err == nil && seqName(seq) == n {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	c := &Checkpoints{s: s, vol: vol, size: size, chunk: chunk, workers: 4}
	for i := len(seqs) - 1; i >= 0 && c.last == nil; i-- {
		data, err := s.get(ctx, c.manifestKey(seqs[i]), maxManifest)
		if err != nil {
			return nil, err
		}
		m, err := decodeManifest(data, seqName(seqs[i]))
		if err != nil {
			// A manifest that does not verify is not a checkpoint: the
			// one before it is the newest.
			continue
		}
		if m.Origin != vol {
			return nil, fmt.Errorf("%s/%s: it describes volume %q, not %q: a manifest was copied under another name", s.loc, c.manifestKey(seqs[i]), m.Origin, vol)
		}
		c.last = m
	}
	switch {
	case c.last != nil:
		if size != 0 && c.last.Size != size {
			return nil, fmt.Errorf("the checkpoints of %s at %s hold %d bytes and the volume has %d: they are another volume's: give another place or name", vol, s.loc, c.last.Size, size)
		}
		c.size, c.chunk = c.last.Size, c.last.ObjectSize
	case size < 0 || chunk < 0 || chunk > 1<<30 || (size == 0) != (chunk == 0) || create && size == 0:
		return nil, fmt.Errorf("checkpoints of %d bytes in chunks of %d: give a positive size and chunk", size, chunk)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

func (c *Checkpoints) manifestKey(seq uint64) string {
	return checkpointsDir(c.vol) + seqName(seq) + ".json"
}

// Size is the volume's bytes (0: no checkpoint to read, not created).
func (c *Checkpoints) Size() int64 { return c.size }

// Chunk is the unit of write-back.
func (c *Checkpoints) Chunk() int64 { return c.chunk }

// Last is the newest complete checkpoint.
func (c *Checkpoints) Last() CheckpointState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return stateOf(c.last)
}

func stateOf(m *Manifest) CheckpointState {
	if m == nil {
		return CheckpointState{}
	}
	seq, _ := strconv.ParseUint(m.Name, 10, 64)
	return CheckpointState{Seq: seq, Time: m.Created, Bytes: m.Changed, Chunks: m.ChangedChunks}
}

// Close stops what is under way; the store keeps every checkpoint.
func (c *Checkpoints) Close() error {
	c.cancel()
	return nil
}

// ReadAt reads the volume as of Last: zeroes where the manifest has
// none, and each object checked against its SHA-256.
func (c *Checkpoints) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	m := c.last
	c.mu.Unlock()
	if m == nil {
		return 0, errors.New("no complete checkpoint to read")
	}
	if off < 0 || off >= m.Size {
		return 0, fmt.Errorf("read at %d: outside the volume's %d bytes", off, m.Size)
	}
	n := int(min(int64(len(p)), m.Size-off))
	end := off + int64(n)
	i := sort.Search(len(m.Extents), func(i int) bool { return m.Extents[i].end() > off })
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	sem := make(chan struct{}, c.workers)
	for ; i < len(m.Extents) && m.Extents[i].Off < end; i++ {
		e := m.Extents[i]
		from, to := max(e.Off, off), min(e.end(), end)
		dst := p[from-off : to-off]
		if e.Object == "" {
			clear(dst)
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			data, err := c.s.fetch(c.ctx, &objectUse{sum: e.Object, size: e.ObjLen})
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			copy(dst, data[e.ObjOff+from-e.Off:])
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	if n < len(p) {
		return n, fmt.Errorf("read at %d: the volume ends at %d", off, m.Size)
	}
	return n, nil
}

// CheckpointTxn is checkpoint seq being written: Put hands each chunk to
// the uploads, Commit waits for them and then stores the manifest.
type CheckpointTxn struct {
	c     *Checkpoints
	seq   uint64
	jobs  chan ckJob
	free  chan []byte // chunk buffers not in use
	held  []byte      // the buffer Buffer gave, until Put
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelCauseFunc
	mu    sync.Mutex
	exts  []Extent // the chunks stored, in any order
	bytes int64
	seen  map[int64]bool
	done  bool
}

type ckJob struct {
	chunk int64
	buf   []byte
}

// Begin starts checkpoint seq, which must be Last().Seq+1.
func (c *Checkpoints) Begin(seq uint64) (*CheckpointTxn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch last := stateOf(c.last).Seq; {
	case c.size == 0:
		return nil, errors.New("checkpoints opened to read only")
	case c.ctx.Err() != nil:
		return nil, errors.New("checkpoints closed")
	case c.txn != nil:
		return nil, fmt.Errorf("begin checkpoint %d: checkpoint %d is still open", seq, c.txn.seq)
	case seq != last+1:
		return nil, fmt.Errorf("begin checkpoint %d: the last complete checkpoint is %d, so the next must be %d", seq, last, last+1)
	}
	if c.have == nil {
		// The objects stored already, which no checkpoint uploads again.
		have, err := c.s.list(c.ctx, "chunks/")
		if err != nil {
			return nil, fmt.Errorf("begin checkpoint %d: %w", seq, err)
		}
		c.have = have
	}
	t := &CheckpointTxn{c: c, seq: seq, jobs: make(chan ckJob), free: make(chan []byte, 2*c.workers+1), seen: map[int64]bool{}}
	t.ctx, t.stop = context.WithCancelCause(c.ctx)
	for range cap(t.free) {
		t.free <- make([]byte, c.chunk)
	}
	for range c.workers {
		t.wg.Go(t.upload)
	}
	c.txn = t
	return t, nil
}

// upload stores the chunks Put hands it, each as an object unless the
// store has it.
func (t *CheckpointTxn) upload() {
	c := t.c
	for j := range t.jobs {
		data := j.buf
		e := Extent{Off: j.chunk * c.chunk, Len: int64(len(data))}
		if !allZero(data) {
			sum := sha256.Sum256(data)
			e.Object, e.ObjLen = hex.EncodeToString(sum[:]), e.Len
			if err := t.store(objectKey(e.Object), data); err != nil {
				t.stop(err)
			}
		}
		t.mu.Lock()
		t.exts = append(t.exts, e)
		t.mu.Unlock()
		t.free <- data[:cap(data)]
	}
}

// store uploads key unless the store has it.
func (t *CheckpointTxn) store(key string, data []byte) error {
	c := t.c
	if t.ctx.Err() != nil {
		return nil // stopped: Commit fails
	}
	c.mu.Lock()
	stored := c.have[key] == int64(len(data))
	fail := c.failPut
	c.mu.Unlock()
	if stored {
		return nil
	}
	if fail != nil {
		if err := fail(key); err != nil {
			return err
		}
	}
	if err := c.s.put(t.ctx, key, data, "application/octet-stream"); err != nil {
		return err
	}
	c.mu.Lock()
	c.have[key] = int64(len(data))
	c.mu.Unlock()
	return nil
}

func allZero(p []byte) bool {
	for len(p) > 0 {
		k := min(len(p), len(zeroes))
		if !bytes.Equal(p[:k], zeroes[:k]) {
			return false
		}
		p = p[k:]
	}
	return true
}

var zeroes = make([]byte, 64<<10)

// usable is the reason t takes no more chunks, or nil.
func (t *CheckpointTxn) usable() error {
	if t.done {
		return fmt.Errorf("checkpoint %d is over", t.seq)
	}
	if err := context.Cause(t.ctx); err != nil {
		return fmt.Errorf("checkpoint %d: %w", t.seq, err)
	}
	return nil
}

// Buffer returns room for the next chunk Put, n bytes: Put of it copies
// nothing. It stays valid until the next Put, Commit or Abort.
func (t *CheckpointTxn) Buffer(n int64) ([]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if n <= 0 || n > t.c.chunk {
		return nil, fmt.Errorf("checkpoint %d: a buffer of %d bytes, want 1 to the chunk size %d", t.seq, n, t.c.chunk)
	}
	if t.held == nil {
		select {
		case t.held = <-t.free:
		case <-t.ctx.Done():
			return nil, t.usable()
		}
	}
	return t.held[:n], nil
}

// Put stores chunk (its index), data being its bytes (fewer for the
// short last chunk). It does not retain data. After a failed Put the
// checkpoint can only be aborted.
func (t *CheckpointTxn) Put(chunk int64, data []byte) error {
	if err := t.usable(); err != nil {
		return err
	}
	c := t.c
	n := (c.size + c.chunk - 1) / c.chunk
	if chunk < 0 || chunk >= n {
		return fmt.Errorf("checkpoint %d: chunk %d is outside the volume's %d chunks", t.seq, chunk, n)
	}
	if want := min(c.chunk, c.size-chunk*c.chunk); int64(len(data)) != want {
		return fmt.Errorf("checkpoint %d: chunk %d is %d bytes, want %d", t.seq, chunk, len(data), want)
	}
	if t.seen[chunk] {
		return fmt.Errorf("checkpoint %d: chunk %d put twice", t.seq, chunk)
	}
	buf, err := t.Buffer(int64(len(data)))
	if err != nil {
		return err
	}
	copy(buf, data) // nothing when data is Buffer's
	t.held = nil
	select {
	case t.jobs <- ckJob{chunk, buf}:
	case <-t.ctx.Done():
		return t.usable()
	}
	t.seen[chunk] = true
	t.bytes += int64(len(data))
	return nil
}

// finish ends the uploads.
func (t *CheckpointTxn) finish() {
	if t.done {
		return
	}
	t.done = true
	close(t.jobs)
	t.wg.Wait()
	t.c.mu.Lock()
	if t.c.txn == t {
		t.c.txn = nil
	}
	t.c.mu.Unlock()
}

// Abort drops the checkpoint: the objects stored stay (content-addressed,
// they may serve later ones), no manifest names them.
func (t *CheckpointTxn) Abort() error {
	t.stop(errors.New("aborted"))
	t.finish()
	return nil
}

// Commit waits until every chunk is stored, then stores the manifest:
// from then on it is the newest checkpoint. Any error leaves the previous
// one as Last.
func (t *CheckpointTxn) Commit(at time.Time) (CheckpointState, error) {
	if t.done {
		return CheckpointState{}, t.usable()
	}
	t.finish()
	c := t.c
	if err := context.Cause(t.ctx); err != nil {
		return CheckpointState{}, fmt.Errorf("checkpoint %d failed, checkpoint %d is intact: %w", t.seq, t.seq-1, err)
	}
	slices.SortFunc(t.exts, func(a, b Extent) int { return cmp.Compare(a.Off, b.Off) })
	base := []Extent{{Off: 0, Len: c.size}}
	c.mu.Lock()
	if c.last != nil {
		base = c.last.Extents
	}
	c.mu.Unlock()
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, Name: seqName(t.seq), Origin: c.vol,
		Created: at.UTC(), Size: c.size, ObjectSize: c.chunk, Changed: t.bytes, ChangedChunks: int64(len(t.exts)),
		Extents: overlay(base, t.exts)}
	body, err := m.encode()
	if err == nil {
		err = m.check()
	}
	if err == nil {
		err = c.s.put(c.ctx, c.manifestKey(t.seq), body, "application/json")
	}
	if err != nil {
		// A PUT that failed may still have stored it: then it is whole,
		// the next open finds it, and the next Begin writes it again.
		return CheckpointState{}, fmt.Errorf("checkpoint %d failed, checkpoint %d is intact: %w", t.seq, t.seq-1, err)
	}
	c.mu.Lock()
	c.last = m
	c.mu.Unlock()
	return stateOf(m), nil
}
