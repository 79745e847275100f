// Package storetest is the conformance suite for exstore.Store
// implementations: every store runs Run with a Factory that opens it, and
// the checks drive it the way the snapshot target does (Prepare, copy the
// data into the COW chunk, Commit), against a reference model of plain
// slices. Persistent stores are also reopened after every kind of crash a
// CrashDev can simulate.
//
// The suite's own tests run it against deliberately broken stores and
// expect it to fail, so a check that cannot fail is noticed.
package storetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Factory describes the store under test.
type Factory struct {
	// Open opens the store kept on dev with the given table chunk size,
	// creating a new one if dev holds none (a zeroed header). The suite
	// calls Load itself.
	Open func(dev backing.Device, chunkSize exstore.Sector) (exstore.Store, error)
	// Persistent says committed exceptions survive Close and a crash, and
	// Load reports them again; it enables the reopen, garbage and crash
	// checks. Otherwise Load must report nothing.
	Persistent bool
	// Merge says PrepareMerge and CommitMerge work; otherwise they must fail
	// with exstore.ErrMergeUnsupported.
	Merge bool
	// RecordsPerArea returns how many exceptions fit in one metadata area at
	// a chunk size; merge runs never span two areas. nil means no limit.
	RecordsPerArea func(chunkSize exstore.Sector) int
	// Seed makes the random checks repeatable; 0 picks one from the clock.
	// The seed in use is logged.
	Seed uint64
}

// Check is one conformance check. Fn reports through t only, so it can be
// run against a recording testing.TB to see that it fails on a bad store.
type Check struct {
	Name string
	Fn   func(t testing.TB, f Factory)
}

// Checks lists the conformance checks in the order Run runs them.
func Checks() []Check {
	return []Check{
		{"RoundTrip", checkRoundTrip},
		{"CommitRejectsBadChunk", checkBadChunk},
		{"NoSpace", checkNoSpace},
		{"ReopenAcrossAreas", checkReopen},
		{"GarbageDevice", checkGarbage},
		{"Merge", checkMerge},
		{"Drop", checkDrop},
		{"ConcurrentCommits", checkConcurrent},
		{"Crash", checkCrash},
		{"CrashConcurrent", checkCrashConcurrent},
	}
}

// Run runs every check as a subtest of t.
func Run(t *testing.T, f Factory) {
	for _, c := range Checks() {
		t.Run(c.Name, func(t *testing.T) { c.Fn(t, f) })
	}
}

// rng returns the check's random source and logs its seed.
func (f Factory) rng(t testing.TB) *rand.Rand {
	seed := f.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (set Factory.Seed to repeat)", seed)
	return rand.New(rand.NewPCG(seed, seed^0x5deece66d))
}

// pattern is the data the checks copy into the COW chunk of an exception
// for origin chunk old: distinct per origin chunk, never all zero.
func pattern(old exstore.Chunk, n int64) []byte {
	b := make([]byte, n)
	x := uint64(old)*0x9e3779b97f4a7c15 + 0x2545f4914f6cdd1d
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
}

// openLoad opens the store on dev and loads it.
func openLoad(f Factory, dev backing.Device, chunk exstore.Sector) (exstore.Store, []exstore.Exception, error) {
	s, err := f.Open(dev, chunk)
	if err != nil {
		return nil, nil, fmt.Errorf("open: %w", err)
	}
	var got []exstore.Exception
	if err := s.Load(func(e exstore.Exception) error { got = append(got, e); return nil }); err != nil {
		s.Close()
		return nil, got, fmt.Errorf("load: %w", err)
	}
	return s, got, nil
}

// mustOpen is openLoad that fails the test on error.
func mustOpen(t testing.TB, f Factory, dev backing.Device, chunk exstore.Sector) (exstore.Store, []exstore.Exception) {
	t.Helper()
	s, got, err := openLoad(f, dev, chunk)
	if err != nil {
		t.Fatalf("%s: %v", dev.Path(), err)
	}
	return s, got
}

// add does what the snapshot target does on a first write to origin chunk
// old: reserve a COW chunk, copy the data there, commit.
func add(s exstore.Store, dev backing.Device, old exstore.Chunk) (exstore.Exception, error) {
	c, err := s.Prepare()
	if err != nil {
		return exstore.Exception{}, fmt.Errorf("prepare for origin chunk %d: %w", old, err)
	}
	e := exstore.Exception{Old: old, New: c}
	if err := writeData(s, dev, e); err != nil {
		return e, err
	}
	if err := s.Commit(e); err != nil {
		return e, fmt.Errorf("commit %v: %w", e, err)
	}
	return e, nil
}

func writeData(s exstore.Store, dev backing.Device, e exstore.Exception) error {
	n := s.ChunkSize().Bytes()
	off := int64(e.New) * n
	if off < 0 || off+n > dev.Size() {
		return fmt.Errorf("prepare returned chunk %d, outside the %d-byte COW device", e.New, dev.Size())
	}
	if _, err := dev.WriteAt(pattern(e.Old, n), off); err != nil {
		return fmt.Errorf("write data of %v: %w", e, err)
	}
	return nil
}

// checkData reports every exception in es whose COW chunk does not hold
// its data.
func checkData(dev backing.Device, chunk exstore.Sector, es []exstore.Exception) error {
	n := chunk.Bytes()
	buf := make([]byte, n)
	for _, e := range es {
		off := int64(e.New) * n
		if off < 0 || off+n > dev.Size() {
			return fmt.Errorf("exception %v points outside the %d-byte COW device", e, dev.Size())
		}
		if _, err := dev.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read data of %v: %w", e, err)
		}
		if !bytes.Equal(buf, pattern(e.Old, n)) {
			return fmt.Errorf("exception %v: COW chunk %d does not hold the data copied for origin chunk %d (the record is durable but the data is not)", e, e.New, e.Old)
		}
	}
	return nil
}

// sameList reports the first difference between two exception lists.
func sameList(got, want []exstore.Exception) error {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Errorf("exception %d is %v, want %v", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("got %d exceptions, want %d (first extra or missing: %v)", len(got), len(want), firstExtra(got, want))
	}
	return nil
}

func firstExtra(a, b []exstore.Exception) exstore.Exception {
	if len(a) > len(b) {
		return a[len(b)]
	}
	return b[len(a)]
}

// sameSet is sameList ignoring order.
func sameSet(got, want []exstore.Exception) error {
	m := make(map[exstore.Exception]int, len(want))
	for _, e := range want {
		m[e]++
	}
	for _, e := range got {
		if m[e] == 0 {
			return fmt.Errorf("loaded %v, which was never committed (or twice)", e)
		}
		m[e]--
	}
	for e, n := range m {
		if n > 0 {
			return fmt.Errorf("committed %v is missing (%d exceptions loaded, %d committed)", e, len(got), len(want))
		}
	}
	return nil
}

// distinctOlds returns n distinct origin chunks in random order.
func distinctOlds(rng *rand.Rand, n int) []exstore.Chunk {
	seen := make(map[exstore.Chunk]bool, n)
	out := make([]exstore.Chunk, 0, n)
	for len(out) < n {
		c := exstore.Chunk(rng.IntN(1 << 20))
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want one matching %q", what, err, target)
	}
}
