package storetest_test

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

// recorder is a testing.TB that records failures instead of reporting
// them, so a check can be run against a broken store and expected to fail.
// Fatal and Skip end the check's goroutine, as in a real test.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	failed  bool
	skipped bool
	msgs    []string
}

func (r *recorder) Helper()                         {}
func (r *recorder) Log(args ...any)                 {}
func (r *recorder) Logf(format string, args ...any) {}
func (r *recorder) Fail()                           { r.fail("Fail called") }
func (r *recorder) FailNow()                        { r.fail("FailNow called"); runtime.Goexit() }
func (r *recorder) Error(args ...any)               { r.fail(fmt.Sprint(args...)) }
func (r *recorder) Errorf(format string, args ...any) {
	r.fail(fmt.Sprintf(format, args...))
}
func (r *recorder) Fatal(args ...any) { r.fail(fmt.Sprint(args...)); runtime.Goexit() }
func (r *recorder) Fatalf(format string, args ...any) {
	r.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any)                 { r.skip() }
func (r *recorder) Skipf(format string, args ...any) { r.skip() }
func (r *recorder) SkipNow()                         { r.skip() }
func (r *recorder) Skipped() bool                    { r.mu.Lock(); defer r.mu.Unlock(); return r.skipped }
func (r *recorder) Failed() bool                     { r.mu.Lock(); defer r.mu.Unlock(); return r.failed }

func (r *recorder) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.msgs = append(r.msgs, msg)
}

func (r *recorder) skip() {
	r.mu.Lock()
	r.skipped = true
	r.mu.Unlock()
	runtime.Goexit()
}

// runCheck runs the named check against f with a recorder.
func runCheck(t *testing.T, name string, f storetest.Factory) *recorder {
	t.Helper()
	i := slices.IndexFunc(storetest.Checks(), func(c storetest.Check) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no check named %s", name)
	}
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		storetest.Checks()[i].Fn(r, f)
	}()
	<-done
	return r
}

func toyFactory(bugs toyBugs) storetest.Factory {
	return storetest.Factory{
		Open: func(dev backing.Device, chunk exstore.Sector) (exstore.Store, error) {
			return openToy(dev, chunk, bugs)
		},
		Persistent: true,
		Seed:       42,
	}
}

func persistentFactory(wrap func(exstore.Store) exstore.Store) storetest.Factory {
	return storetest.Factory{
		Open: func(dev backing.Device, chunk exstore.Sector) (exstore.Store, error) {
			s, err := persistent.Open(dev, persistent.Options{ChunkSize: chunk})
			if err != nil {
				return nil, err
			}
			return wrap(s), nil
		},
		Persistent:     true,
		Merge:          true,
		RecordsPerArea: func(chunk exstore.Sector) int { return int(chunk.Bytes() / 16) },
		Seed:           42,
	}
}

// TestChecks_ToyStore: a correct store without group commit passes every
// check but ConcurrentCommits, which must notice the missing batching.
func TestChecks_ToyStore(t *testing.T) {
	for _, c := range storetest.Checks() {
		r := runCheck(t, c.Name, toyFactory(toyBugs{}))
		switch {
		case c.Name == "ConcurrentCommits" && !r.Failed():
			t.Errorf("%s passed on a store that writes and flushes every commit alone", c.Name)
		case c.Name != "ConcurrentCommits" && r.Failed():
			t.Errorf("%s failed on the correct toy store: %s", c.Name, strings.Join(r.msgs, "; "))
		}
	}
}

// TestChecks_BrokenStores: each deliberate bug is caught by the check
// aimed at it.
func TestChecks_BrokenStores(t *testing.T) {
	tests := []struct {
		name  string
		check string
		f     storetest.Factory
	}{
		{"metadata written before data is flushed", "Crash", toyFactory(toyBugs{noPreFlush: true})},
		{"metadata not flushed before Commit returns", "Crash", toyFactory(toyBugs{noPostFlush: true})},
		{"no end marker after the last record", "GarbageDevice", toyFactory(toyBugs{noZero: true})},
		{"no end marker, under crashes", "Crash", toyFactory(toyBugs{noZero: true})},
		{"Commit acknowledged before it is durable", "Crash", persistentFactory(earlyAck)},
		{"Commit acknowledged before it is durable, concurrent", "CrashConcurrent", persistentFactory(earlyAck)},
		{"commits serialised: no group commit", "ConcurrentCommits", persistentFactory(serial)},
		{"merge runs cut to one exception", "Merge", persistentFactory(shortRuns)},
		{"merged exceptions not forgotten", "Merge", persistentFactory(noCommitMerge)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCheck(t, tt.check, tt.f)
			if !r.Failed() {
				t.Fatalf("check %s passed on a store with this bug", tt.check)
			}
			t.Logf("%s caught it: %s", tt.check, r.msgs[0])
		})
	}
}

// earlyAck acknowledges a commit at once and commits in the background.
type earlyAckStore struct {
	exstore.Store
	wg sync.WaitGroup
}

func earlyAck(s exstore.Store) exstore.Store { return &earlyAckStore{Store: s} }

func (s *earlyAckStore) Commit(e exstore.Exception) error {
	s.wg.Go(func() { s.Store.Commit(e) })
	return nil
}

func (s *earlyAckStore) Close() error {
	s.wg.Wait()
	return s.Store.Close()
}

// serialStore lets one commit run at a time.
type serialStore struct {
	exstore.Store
	mu sync.Mutex
}

func serial(s exstore.Store) exstore.Store { return &serialStore{Store: s} }

func (s *serialStore) Commit(e exstore.Exception) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Store.Commit(e)
}

// shortRunsStore never reports a run longer than one exception.
type shortRunsStore struct{ exstore.Store }

func shortRuns(s exstore.Store) exstore.Store { return shortRunsStore{s} }

func (s shortRunsStore) PrepareMerge() (exstore.Exception, int, error) {
	e, n, err := s.Store.PrepareMerge()
	return e, min(n, 1), err
}

// noCommitMergeStore pretends to forget merged exceptions.
type noCommitMergeStore struct{ exstore.Store }

func noCommitMerge(s exstore.Store) exstore.Store { return noCommitMergeStore{s} }

func (noCommitMergeStore) CommitMerge(int) error { return nil }

func TestCrashDev_CloneKeepsOnlyFlushed(t *testing.T) {
	d := storetest.NewCrashDev("d", 4096)
	d.WriteAt([]byte("durable"), 0)
	d.Flush()
	d.WriteAt([]byte("pending"), 512)
	d.WriteZeroes(0, 3)
	c := d.CrashClone(nil)
	buf := make([]byte, 7)
	c.ReadAt(buf, 0)
	if string(buf) != "durable" {
		t.Errorf("clone at 0 = %q, want the flushed %q (the zeroing was not flushed)", buf, "durable")
	}
	c.ReadAt(buf, 512)
	if string(buf) != "\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("clone at 512 = %q, want zeroes: the write was never flushed", buf)
	}
	d.ReadAt(buf, 512)
	if string(buf) != "pending" {
		t.Errorf("device at 512 = %q: reads must see unflushed writes", buf)
	}
	d.Flush()
	c = d.CrashClone(nil)
	c.ReadAt(buf, 0)
	if string(buf) != "\x00\x00\x00able" {
		t.Errorf("after flush, clone at 0 = %q, want the zeroed prefix", buf)
	}
}

func TestCrashDev_RandomCloneTearsAtSectors(t *testing.T) {
	d := storetest.NewCrashDev("d", 8*512)
	big := make([]byte, 8*512)
	for i := range big {
		big[i] = 0xaa
	}
	d.WriteAt(big, 0)
	seen := map[string]bool{}
	for seed := range uint64(200) {
		c := d.CrashClone(newRand(seed))
		var key strings.Builder
		for s := range 8 {
			b := make([]byte, 512)
			c.ReadAt(b, int64(s)*512)
			switch {
			case b[0] == 0xaa && b[511] == 0xaa:
				key.WriteByte('1')
			case b[0] == 0 && b[511] == 0:
				key.WriteByte('0')
			default:
				t.Fatalf("seed %d: sector %d torn inside: %x..%x", seed, s, b[0], b[511])
			}
		}
		seen[key.String()] = true
	}
	if !seen["00000000"] || !seen["11111111"] || len(seen) < 10 {
		t.Errorf("random clones of one unflushed 8-sector write gave only %d outcomes (%v): want lost, complete and torn ones", len(seen), seen)
	}
}
