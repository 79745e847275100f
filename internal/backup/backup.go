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
	"sync"
	"time"
)

// Volume is a snapshot or volume read at byte offsets (an NBD connection).
type Volume interface {
	ReadAt(p []byte, off int64) error
	Size() int64
}

// Target is a volume a restore writes.
type Target interface {
	Volume
	WriteAt(p []byte, off int64) error
	Flush() error
}

// Range is Len bytes at Off.
type Range struct{ Off, Len int64 }

// Progress is how far an operation has come, in bytes of the volume.
type Progress struct {
	Phase string // "upload", "verify" or "write"
	Done  int64  // bytes of the volume done
	Total int64  // bytes of the volume to do
	Sent  int64  // bytes uploaded (backup) or downloaded (restore)
}

// Request is one backup.
type Request struct {
	Name   string // the snapshot, and the manifest's name
	Origin string // its origin, recorded and checked against Since's
	Source Volume
	// Since names an earlier backup at the same place of a snapshot of the
	// same origin. With Changed, only those ranges are read (the rest comes
	// from Since's manifest); with Changed nil, everything is read and
	// only objects not yet stored are sent.
	Since   string
	Changed []Range
	// Workers is how many uploads run at once (default 4).
	Workers int
	// Progress, if set, is called as work is done, one call at a time.
	Progress func(Progress)
}

// Result says what a backup or restore did.
type Result struct {
	Manifest *Manifest
	Read     int64 // bytes read from the volume (backup) or written to it (restore)
	Sent     int64 // bytes uploaded (backup) or downloaded (restore), manifests excluded
	Objects  int   // objects the work referred to
	Uploaded int   // objects uploaded (backup) or verified (restore)
	Present  int   // restore with Resume: objects the target already held, not downloaded
	// ManifestBytes is the size of the manifest written (or read).
	ManifestBytes int64
}

// Manifest downloads and verifies snapshot name's manifest, and returns it
// with its SHA-256.
func (s *Store) Manifest(ctx context.Context, name string) (*Manifest, string, error) {
	if err := checkName(name); err != nil {
		return nil, "", err
	}
	data, err := s.get(ctx, manifestKey(name), maxManifest)
	if errors.Is(err, errNotFound) {
		return nil, "", fmt.Errorf("%s has no backup of snapshot %q (no %s): `daxsnap backup list %s` shows what is there", s.loc, name, manifestKey(name), s.loc)
	}
	if err != nil {
		return nil, "", err
	}
	m, err := decodeManifest(data, name)
	if err != nil {
		return nil, "", fmt.Errorf("%s/%s: %w", s.loc, manifestKey(name), err)
	}
	sum := sha256.Sum256(data)
	return m, hex.EncodeToString(sum[:]), nil
}

// pieces cuts ranges (sorted, disjoint) on the ObjectSize grid.
func pieces(ranges []Range) []Range {
	var out []Range
	for _, r := range ranges {
		for off := r.Off; off < r.Off+r.Len; {
			end := min((off/ObjectSize+1)*ObjectSize, r.Off+r.Len)
			out = append(out, Range{off, end - off})
			off = end
		}
	}
	return out
}

// normalize sorts and merges ranges, refusing any outside [0, size).
func normalize(ranges []Range, size int64) ([]Range, error) {
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	var out []Range
	for _, r := range rs {
		if r.Off < 0 || r.Len < 0 || r.Off+r.Len > size {
			return nil, fmt.Errorf("changed extent %d+%d lies outside the %d-byte snapshot: the changed-extent list is wrong", r.Off, r.Len, size)
		}
		if r.Len == 0 {
			continue
		}
		if n := len(out); n > 0 && r.Off <= out[n-1].Off+out[n-1].Len {
			out[n-1].Len = max(out[n-1].Off+out[n-1].Len, r.Off+r.Len) - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// Backup stores req.Source as snapshot req.Name: the objects it lacks,
// then the manifest, last, so that an interrupted backup leaves no
// manifest and the next run sends only the objects still missing.
func (s *Store) Backup(ctx context.Context, req Request) (*Result, error) {
	if err := checkName(req.Name); err != nil {
		return nil, err
	}
	size := req.Source.Size()
	if size <= 0 {
		return nil, fmt.Errorf("snapshot %s has size %d: nothing to back up", req.Name, size)
	}
	if ok, err := s.exists(ctx, manifestKey(req.Name)); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("%s already has a backup of snapshot %s (%s): back up another snapshot, or delete that manifest to replace it", s.loc, req.Name, manifestKey(req.Name))
	}
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, Name: req.Name, Origin: req.Origin,
		Created: time.Now().UTC().Truncate(time.Second), Size: size, ObjectSize: ObjectSize}
	var parent *Manifest
	ranges := []Range{{0, size}}
	if req.Since != "" {
		if req.Since == req.Name {
			return nil, fmt.Errorf("--since %s is the snapshot being backed up: give an older one", req.Since)
		}
		p, sum, err := s.Manifest(ctx, req.Since)
		if err != nil {
			return nil, fmt.Errorf("--since %s: %w (back up %s first, or leave --since out for a full backup)", req.Since, err, req.Since)
		}
		switch {
		case p.Size != size:
			return nil, fmt.Errorf("--since %s: that backup is of %d bytes, snapshot %s has %d: an increment needs the same size (leave --since out for a full backup)", req.Since, p.Size, req.Name, size)
		case p.ObjectSize != ObjectSize:
			return nil, fmt.Errorf("--since %s: stored with %d-byte objects, this daxsnap cuts %d: leave --since out for a full backup", req.Since, p.ObjectSize, ObjectSize)
		case p.Origin != "" && req.Origin != "" && p.Origin != req.Origin:
			return nil, fmt.Errorf("--since %s: that is a snapshot of %s, %s is of %s: an increment needs snapshots of one origin", req.Since, p.Origin, req.Name, req.Origin)
		}
		parent, m.Parent, m.ParentSHA256 = p, req.Since, sum
		if req.Changed != nil {
			var err error
			if ranges, err = normalize(req.Changed, size); err != nil {
				return nil, err
			}
		}
	}
	todo := pieces(ranges)
	var total int64
	for _, r := range ranges {
		total += r.Len
	}
	m.Changed = total
	have, err := s.list(ctx, "chunks/")
	if err != nil {
		return nil, err
	}
	res := &Result{Manifest: m}
	extents, err := s.upload(ctx, req, todo, total, have, res)
	if err != nil {
		return nil, err
	}
	if parent != nil && req.Changed != nil {
		extents = overlay(parent.Extents, extents)
	} else {
		extents = overlay([]Extent{{Off: 0, Len: size}}, extents)
	}
	m.Extents = extents
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("backup of %s made a bad manifest, this is a daxsnap bug, please report it: %w", req.Name, err)
	}
	data, err := m.encode()
	if err != nil {
		return nil, err
	}
	if err := s.put(ctx, manifestKey(req.Name), data, "application/json"); err != nil {
		return nil, err
	}
	res.ManifestBytes = int64(len(data))
	return res, nil
}

// upload reads each piece in order (the volume is one NBD connection)
// and hands it to req.Workers workers, which hash it and upload it unless
// it is stored already. It returns the pieces as extents.
func (s *Store) upload(ctx context.Context, req Request, todo []Range, total int64, have map[string]int64, res *Result) ([]Extent, error) {
	workers := req.Workers
	if workers <= 0 {
		workers = 4
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		i    int
		data []byte
	}
	jobs := make(chan job, workers)
	extents := make([]Extent, len(todo))
	var (
		mu         sync.Mutex
		done, sent int64
	)
	report := func(n, up int64) {
		mu.Lock() // also serializes the calls of req.Progress
		defer mu.Unlock()
		done += n
		sent += up
		if req.Progress != nil {
			req.Progress(Progress{Phase: "upload", Done: done, Total: total, Sent: sent})
		}
	}
	// claim decides whether this run uploads key: not if it is stored, or
	// another piece of this run has it.
	claim := func(key string, n int64) bool {
		mu.Lock()
		defer mu.Unlock()
		res.Objects++
		if have[key] == n {
			return false
		}
		have[key] = n
		res.Uploaded++
		res.Sent += n
		return true
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				r := todo[j.i]
				sum := sha256.Sum256(j.data)
				h := hex.EncodeToString(sum[:])
				extents[j.i] = Extent{Off: r.Off, Len: r.Len, Object: h, ObjLen: r.Len}
				if !claim(objectKey(h), r.Len) {
					report(r.Len, 0)
					continue
				}
				if err := s.put(ctx, objectKey(h), j.data, "application/octet-stream"); err != nil {
					cancel(err)
					continue
				}
				report(r.Len, r.Len)
			}
		})
	}
	zero := make([]byte, ObjectSize)
	var readErr error
	for i, r := range todo {
		if ctx.Err() != nil {
			break
		}
		buf := make([]byte, r.Len)
		if err := req.Source.ReadAt(buf, r.Off); err != nil {
			readErr = fmt.Errorf("read %s at %d (+%d): %w", req.Name, r.Off, r.Len, err)
			break
		}
		res.Read += r.Len
		if bytes.Equal(buf, zero[:r.Len]) {
			extents[i] = Extent{Off: r.Off, Len: r.Len}
			report(r.Len, 0)
			continue
		}
		select {
		case jobs <- job{i, buf}:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && readErr == nil {
		readErr = err
	}
	if readErr != nil {
		return nil, fmt.Errorf("backup of %s stopped (the objects sent so far stay; run it again to send the rest): %w", req.Name, readErr)
	}
	return extents, nil
}
