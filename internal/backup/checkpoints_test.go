package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// ckModel is a volume checkpointed as the engine does: chunks written
// since the last checkpoint are Put, the first checkpoint Puts every
// chunk that is not zeroes.
type ckModel struct {
	t       *testing.T
	vol     []byte
	chunk   int64
	dirty   map[int64]bool
	r       *rand.Rand
	history map[uint64][]byte // each committed checkpoint's contents
}

func newCkModel(t *testing.T, size, chunk int64) *ckModel {
	return &ckModel{t: t, vol: make([]byte, size), chunk: chunk, dirty: map[int64]bool{},
		r: rand.New(rand.NewPCG(7, 8)), history: map[uint64][]byte{}}
}

// scribble changes n chunks: random bytes, zeroes, or another chunk's bytes.
func (m *ckModel) scribble(n int) {
	chunks := (int64(len(m.vol)) + m.chunk - 1) / m.chunk
	for range n {
		c := m.r.Int64N(chunks)
		p := m.vol[c*m.chunk : min(int64(len(m.vol)), (c+1)*m.chunk)]
		switch m.r.IntN(4) {
		case 0:
			clear(p)
		case 1:
			copy(p, m.vol[:m.chunk]) // a duplicate: one object
		default:
			off := m.r.IntN(len(p))
			fill(m.r, p[off:min(len(p), off+1+m.r.IntN(5000))])
		}
		m.dirty[c] = true
	}
}

// put writes the dirty chunks into txn, some through its Buffer.
func (m *ckModel) put(txn *CheckpointTxn, first bool) error {
	chunks := (int64(len(m.vol)) + m.chunk - 1) / m.chunk
	for c := range chunks {
		data := m.vol[c*m.chunk : min(int64(len(m.vol)), (c+1)*m.chunk)]
		if !m.dirty[c] && !(first && !allZero(data)) {
			continue
		}
		if c%2 == 0 {
			buf, err := txn.Buffer(int64(len(data)))
			if err != nil {
				return err
			}
			copy(buf, data)
			data = buf
		}
		if err := txn.Put(c, data); err != nil {
			return err
		}
	}
	return nil
}

// checkpoint takes checkpoint seq of the model through c.
func (m *ckModel) checkpoint(c *Checkpoints) {
	m.t.Helper()
	seq := c.Last().Seq + 1
	txn, err := c.Begin(seq)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := m.put(txn, seq == 1); err != nil {
		m.t.Fatal(err)
	}
	cp, err := txn.Commit(time.Now())
	if err != nil {
		m.t.Fatal(err)
	}
	if cp.Seq != seq || c.Last() != cp {
		m.t.Fatalf("checkpoint %d: committed %+v, Last %+v", seq, cp, c.Last())
	}
	m.history[seq] = bytes.Clone(m.vol)
	clear(m.dirty)
}

// readBack opens the checkpoints afresh, as a restore does, and checks
// that the newest is seq and reads exactly as the model did then.
func (m *ckModel) readBack(s *Store, vol string, seq uint64) {
	m.t.Helper()
	c, err := s.OpenCheckpoints(context.Background(), vol, 0, 0, false)
	if err != nil {
		m.t.Fatal(err)
	}
	defer c.Close()
	if got := c.Last().Seq; got != seq {
		m.t.Fatalf("reopened: newest checkpoint %d, want %d", got, seq)
	}
	if c.Size() != int64(len(m.vol)) || c.Chunk() != m.chunk {
		m.t.Fatalf("reopened: %d bytes in chunks of %d, want %d in %d", c.Size(), c.Chunk(), len(m.vol), m.chunk)
	}
	got := make([]byte, len(m.vol))
	// Reads of odd sizes at odd offsets, as well as whole.
	for off := 0; off < len(got); {
		n := min(len(got)-off, 1+m.r.IntN(3*int(m.chunk)))
		if _, err := c.ReadAt(got[off:off+n], int64(off)); err != nil {
			m.t.Fatalf("checkpoint %d: read %d at %d: %v", seq, n, off, err)
		}
		off += n
	}
	if want := m.history[seq]; !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				m.t.Fatalf("checkpoint %d reads back different bytes, first at %d (chunk %d)", seq, i, int64(i)/m.chunk)
			}
		}
	}
}

// Every manifest alone restores its checkpoint exactly: checkpoints are
// taken, then the newest manifests are removed one by one, and each time
// the newest left reads as the volume did at its checkpoint.
func TestCheckpoints_eachManifestRestoresItsCheckpoint(t *testing.T) {
	s, srv := openStore(t, "ck")
	const chunk = 4096
	m := newCkModel(t, 24*chunk+1000, chunk) // a short last chunk
	c, err := s.OpenCheckpoints(context.Background(), "vol1", int64(len(m.vol)), chunk, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Last().Seq != 0 {
		t.Fatalf("a new place holds checkpoint %d", c.Last().Seq)
	}
	const seqs = 6
	for seq := uint64(1); seq <= seqs; seq++ {
		m.scribble(5)
		m.checkpoint(c)
	}
	m.scribble(3)
	m.checkpoint(c) // and one with nothing written
	m.checkpoint(c)
	for seq := uint64(seqs + 2); seq >= 1; seq-- {
		m.readBack(s, "vol1", seq)
		if err := srv.Client.RemoveObject(context.Background(), srv.Bucket, "ck/"+c.manifestKey(seq), minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The volume's last checkpoint gone, a start to read it finds none.
	r, err := s.OpenCheckpoints(context.Background(), "vol1", 0, 0, false)
	if err != nil || r.Last().Seq != 0 || r.Size() != 0 {
		t.Fatalf("no manifest left: open gives %+v, %d bytes, %v", r.Last(), r.Size(), err)
	}
}

// A checkpoint that fails or stops between its objects and its manifest
// leaves the one before it whole as the newest; so does a newest manifest
// that is damaged.
func TestCheckpoints_crashLeavesPreviousWhole(t *testing.T) {
	s, srv := openStore(t, "crash")
	const chunk = 8192
	m := newCkModel(t, 16*chunk, chunk)
	c, err := s.OpenCheckpoints(context.Background(), "v", int64(len(m.vol)), chunk, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m.scribble(8)
	m.checkpoint(c)
	m.scribble(8)
	m.checkpoint(c)

	// An upload fails: the third new object of checkpoint 3.
	m.scribble(10)
	var puts atomic.Int64
	c.failPut = func(key string) error {
		if puts.Add(1) == 3 {
			return errors.New("injected upload failure")
		}
		return nil
	}
	txn, err := c.Begin(3)
	if err != nil {
		t.Fatal(err)
	}
	err = m.put(txn, false) // may see the failure already
	if _, cerr := txn.Commit(time.Now()); cerr == nil || !strings.Contains(errors.Join(err, cerr).Error(), "injected") {
		t.Fatalf("checkpoint 3 with a failed upload: put %v, commit %v; want the failure", err, cerr)
	}
	c.failPut = nil
	if puts.Load() < 3 {
		t.Fatalf("only %d uploads: the failure was not injected", puts.Load())
	}
	if c.Last().Seq != 2 {
		t.Fatalf("after a failed checkpoint 3, Last is %d", c.Last().Seq)
	}
	m.readBack(s, "v", 2)

	// The process dies after the objects, before the manifest.
	txn, err = c.Begin(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.put(txn, false); err != nil {
		t.Fatal(err)
	}
	txn.Abort()
	m.readBack(s, "v", 2)

	// Checkpoint 3 then completes; a damaged manifest 4 is not the newest.
	m.checkpoint(c)
	m.readBack(s, "v", 3)
	junk := []byte(`{"format":"daxsnap-backup","version":1,"name":"00000000000000000004","ext`)
	if _, err := srv.Client.PutObject(context.Background(), srv.Bucket, "crash/"+c.manifestKey(4), bytes.NewReader(junk), int64(len(junk)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	m.readBack(s, "v", 3)
}
