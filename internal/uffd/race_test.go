package uffd_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/uffd"
)

// Several writer threads store to random pages while one goroutine keeps
// write-protecting random pages and two handlers resolve the faults. The
// checks: while a page is protected, no store reaches it (its content stays
// what it was right after Protect); every fault is a write-protect write
// fault on a page of the range; in the end, every store is in the file.
func TestRace_WritersProtectorHandlers(t *testing.T) {
	const (
		pages    = 16
		writers  = 4
		handlers = 2
		duration = time.Second // writers store until then, or until
		enough   = 20000       // this many faults were resolved
	)
	f := shmFixture(t, pages, wpShmem, uffd.FeatureThreadID)
	// A writer waiting on a fault holds its P until the runtime preempts
	// it: give the handlers Ps of their own.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(writers + handlers + 2))
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	type pageState struct {
		mu        sync.Mutex
		protected bool
		snap      []byte // the page right after Protect
	}
	var state [pages]pageState
	page := func(i int) []byte { return f.daemon[i*pageSize : (i+1)*pageSize] }
	var faults, spurious atomic.Int64

	var handlersDone sync.WaitGroup
	for h := range handlers {
		handlersDone.Add(1)
		go func() {
			defer handlersDone.Done()
			buf := make([]uffd.Msg, 8)
			for {
				// One handler parks in the runtime poller, the other spins
				// then blocks its thread in poll(2).
				n, err := f.fd.Wait(buf, time.Duration(h)*20*time.Microsecond, uffd.Block(h))
				if err == uffd.ErrClosed {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				for _, m := range buf[:n] {
					flt := m.Fault()
					i := int(flt.Addr-addrOf(f.client)) / pageSize
					if m.Event != uffd.EventPagefault || flt.Flags != uffd.FaultWP|uffd.FaultWrite ||
						flt.Addr < addrOf(f.client) || i >= pages || flt.Addr != f.pageAddr(i) {
						t.Errorf("unexpected message %v", m)
						continue
					}
					st := &state[i]
					st.mu.Lock()
					if st.protected {
						faults.Add(1)
						if !bytes.Equal(page(i), st.snap) {
							t.Errorf("page %d changed while write-protected", i)
						}
						st.protected = false
						err = f.fd.Unprotect(f.pageAddr(i), uintptr(pageSize))
					} else {
						// Already resolved for another writer, or a fault
						// repeated after a signal: just make sure it is awake.
						spurious.Add(1)
						err = f.fd.Wake(f.pageAddr(i), uintptr(pageSize))
					}
					st.mu.Unlock()
					if err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}

	stop := make(chan struct{})
	protectorDone := make(chan struct{})
	go func() {
		defer close(protectorDone)
		r := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			i := r.IntN(pages)
			st := &state[i]
			st.mu.Lock()
			if !st.protected {
				if err := f.fd.Protect(f.pageAddr(i), uintptr(pageSize)); err != nil {
					t.Error(err)
				}
				st.snap = append(st.snap[:0], page(i)...)
				st.protected = true
			}
			st.mu.Unlock()
			time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
		}
	}()

	var quit atomic.Bool
	time.AfterFunc(duration, func() { quit.Store(true) })
	go func() {
		for !quit.Load() && faults.Load() < enough {
			time.Sleep(time.Millisecond)
		}
		quit.Store(true)
	}()
	final := make([][pages]uint64, writers)
	var writersDone sync.WaitGroup
	for w := range writers {
		writersDone.Add(1)
		f.writers.Add(1)
		go func() {
			defer writersDone.Done()
			defer f.writers.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			r := rand.New(rand.NewPCG(seed, uint64(w)+2))
			for s := 1; !quit.Load(); s++ {
				i := r.IntN(pages)
				binary.LittleEndian.PutUint64(f.client[i*pageSize+w*8:], uint64(s))
				final[w][i] = uint64(s)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { writersDone.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Error("the writers did not finish in 30s: a fault was never resolved")
	}
	close(stop)
	<-protectorDone
	f.fd.Close() // stops the handlers; releases any stuck writer
	handlersDone.Wait()
	<-finished

	for w := range writers {
		for i := range pages {
			if got := get64(f.daemon, i*pageSize+w*8); got != final[w][i] {
				t.Errorf("page %d, writer %d: the file holds store %d, want %d", i, w, got, final[w][i])
			}
		}
	}
	t.Logf("%d faults resolved, %d repeated or already resolved", faults.Load(), spurious.Load())
	if faults.Load() == 0 {
		t.Error("no fault was resolved: the test exercised nothing")
	}
}
