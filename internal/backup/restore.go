package backup

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// RestoreRequest is one restore of snapshot Name onto Target.
type RestoreRequest struct {
	Name     string
	Target   Target
	Workers  int // downloads at once (default 4)
	Progress func(Progress)
	// Resume skips the objects whose bytes the target already holds where
	// the manifest puts them (read back and checked by SHA-256), as after
	// an interrupted restore: only the others are downloaded and written.
	Resume bool
}

// objectUse is one object and the extents that take bytes from it.
type objectUse struct {
	sum     string
	size    int64
	extents []Extent
}

// uses groups m's extents by object, in the order objects first appear.
func uses(m *Manifest) []*objectUse {
	var out []*objectUse
	byObj := map[string]*objectUse{}
	for _, e := range m.Extents {
		if e.Object == "" {
			continue
		}
		u := byObj[e.Object]
		if u == nil {
			u = &objectUse{sum: e.Object, size: e.ObjLen}
			byObj[e.Object] = u
			out = append(out, u)
		}
		u.extents = append(u.extents, e)
	}
	return out
}

// fetch downloads object u and checks its length and SHA-256.
func (s *Store) fetch(ctx context.Context, u *objectUse) ([]byte, error) {
	data, err := s.get(ctx, objectKey(u.sum), u.size)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != u.size {
		return nil, fmt.Errorf("%s/%s: %d bytes, the manifest says %d: the object is truncated or corrupt", s.loc, objectKey(u.sum), len(data), u.size)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != u.sum {
		return nil, fmt.Errorf("%s/%s: its content's SHA-256 is %.16s…: the object is corrupt or was replaced", s.loc, objectKey(u.sum), hex.EncodeToString(sum[:]))
	}
	return data, nil
}

// each downloads and verifies every object of objs with workers at once,
// handing each to fn in the order of objs (fn runs on one goroutine).
func (s *Store) each(ctx context.Context, objs []*objectUse, workers int, fn func(*objectUse, []byte) error) error {
	if workers <= 0 {
		workers = 4
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type got struct {
		data []byte
		err  error
	}
	slots := make([]chan got, len(objs))
	for i := range slots {
		slots[i] = make(chan got, 1)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				data, err := s.fetch(ctx, objs[i])
				slots[i] <- got{data, err}
			}
		})
	}
	// Feed at most 2*workers objects ahead of fn, bounding memory.
	sem := make(chan struct{}, 2*workers)
	go func() {
		defer close(next)
		for i := range objs {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var err error
	for i := range objs {
		var g got
		select {
		case g = <-slots[i]:
		case <-ctx.Done():
			g.err = context.Cause(ctx)
		}
		<-sem
		if g.err == nil {
			g.err = fn(objs[i], g.data)
		}
		if g.err != nil {
			err = g.err
			cancel(err)
			break
		}
	}
	cancel(nil)
	wg.Wait()
	return err
}

// Restore writes snapshot req.Name onto req.Target. It first downloads and
// verifies every object the manifest names, writing nothing, so that a
// corrupt, truncated or missing object leaves the target as it was; then
// it downloads them again, verifying each once more, and writes.
func (s *Store) Restore(ctx context.Context, req RestoreRequest) (*Result, error) {
	m, _, err := s.Manifest(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if have := req.Target.Size(); have < m.Size {
		return nil, fmt.Errorf("the target has %d bytes, backup %s needs %d: restore onto a volume at least that large (daxsnap create, on a region of that size)", have, req.Name, m.Size)
	}
	objs := uses(m)
	res := &Result{Manifest: m, Objects: len(objs)}
	if req.Resume {
		var err error
		if objs, err = missing(objs, req.Target); err != nil {
			return nil, fmt.Errorf("restore of %s: read the target back to resume: %w (nothing was written)", req.Name, err)
		}
		res.Present = res.Objects - len(objs)
	}
	var verified, written, sent int64
	report := func(phase string, done, total int64) {
		if req.Progress != nil {
			req.Progress(Progress{Phase: phase, Done: done, Total: total, Sent: sent})
		}
	}
	var stored int64
	for _, u := range objs {
		stored += u.size
	}
	err = s.each(ctx, objs, req.Workers, func(u *objectUse, data []byte) error {
		verified += u.size
		sent += u.size
		res.Uploaded++
		report("verify", verified, stored)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("restore of %s refused before writing anything (the target is unchanged): %w", req.Name, err)
	}
	zeros := make([]byte, ObjectSize)
	writeZeros := func(e Extent) error {
		for off := e.Off; off < e.end(); off += ObjectSize {
			n := min(ObjectSize, e.end()-off)
			if err := req.Target.WriteAt(zeros[:n], off); err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
			written += n
			report("write", written, m.Size)
		}
		return nil
	}
	for _, e := range m.Extents {
		if e.Object == "" {
			if err := writeZeros(e); err != nil {
				return nil, fmt.Errorf("restore of %s: %w (the target is partly written: run the restore again)", req.Name, err)
			}
		}
	}
	err = s.each(ctx, objs, req.Workers, func(u *objectUse, data []byte) error {
		sent += u.size
		for _, e := range u.extents {
			if err := req.Target.WriteAt(data[e.ObjOff:e.ObjOff+e.Len], e.Off); err != nil {
				return fmt.Errorf("write at %d: %w", e.Off, err)
			}
			written += e.Len
			report("write", written, m.Size)
		}
		return nil
	})
	if err == nil {
		err = req.Target.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("restore of %s: %w (the target is partly written: run the restore again)", req.Name, err)
	}
	res.Read, res.Sent = written, sent
	return res, nil
}

// missing returns the objects of objs whose bytes t does not hold at
// every place the manifest puts them. An object is checked when its
// extents cover it whole (read back from t and hashed); one they cover
// only in part cannot be, and counts as missing.
func missing(objs []*objectUse, t Target) ([]*objectUse, error) {
	var out []*objectUse
	for _, u := range objs {
		if !coversWhole(u) {
			out = append(out, u)
			continue
		}
		buf := make([]byte, u.size)
		for _, e := range u.extents {
			if err := t.ReadAt(buf[e.ObjOff:e.ObjOff+e.Len], e.Off); err != nil {
				return nil, fmt.Errorf("read at %d: %w", e.Off, err)
			}
		}
		if sum := sha256.Sum256(buf); hex.EncodeToString(sum[:]) != u.sum {
			out = append(out, u)
		}
	}
	return out, nil
}

// coversWhole says whether u's extents take every byte of the object.
func coversWhole(u *objectUse) bool {
	ex := slices.SortedFunc(slices.Values(u.extents), func(a, b Extent) int { return cmp.Compare(a.ObjOff, b.ObjOff) })
	end := int64(0)
	for _, e := range ex {
		if e.ObjOff > end {
			return false
		}
		end = max(end, e.ObjOff+e.Len)
	}
	return end >= u.size
}

// Entry is one backup found by List.
type Entry struct {
	Name     string
	Manifest *Manifest // nil when Err is set
	Err      error     // why the manifest does not verify
}

// List returns the backups at the store's place, sorted by name, each
// manifest verified.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	keys, err := s.list(ctx, "snapshots/")
	if err != nil {
		return nil, err
	}
	var out []Entry
	for k := range keys {
		name, ok := strings.CutSuffix(strings.TrimPrefix(k, "snapshots/"), ".json")
		if !ok || strings.Contains(name, "/") {
			continue
		}
		m, _, err := s.Manifest(ctx, name)
		out = append(out, Entry{Name: name, Manifest: m, Err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
