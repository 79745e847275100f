package session

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Recall: the stop-the-world of DESIGN.md for a change that moves or
// removes a device's memory under its mappings. The server fences the
// device (new map requests for it, or for tables over it, are refused with
// CodeRetry until release), asks every session mapping it to give the
// mapping back within the deadline (the client library pauses the
// mapping's accessors and unmaps it), checks in /proc/PID/maps that the
// memory is gone from each process, and drops the mappings. All or
// nothing for the caller: if one mapping is not given back, Recall fails
// and the caller must not make the change (the mappings given back stay
// given back; their clients map again when they next need to).

// errFenced refuses map requests while a recall is under way.
var errFenced = errors.New("its mappings are being recalled for a table change")

// fenced reports whether a recall holds new mappings of any device in via
// (the device mapped and those its table reaches) off.
func (s *Server) fenced(via []*dm.Device) error {
	for _, d := range via {
		if ds := s.devState(d); ds != nil && ds.fence.Load() > 0 {
			return fmt.Errorf("device %s: %w: map again shortly", d.Name(), errFenced)
		}
	}
	return nil
}

// RecallError lists the mappings that were not given back.
type RecallError struct {
	Device string
	Failed []RecallFailure
}

// RecallFailure is one mapping a recall could not take back, and why.
type RecallFailure struct {
	Holder
	Reason string
}

func (e *RecallError) Error() string {
	parts := make([]string, len(e.Failed))
	for i, f := range e.Failed {
		parts[i] = fmt.Sprintf("pid %d (%s bytes %d+%d): %s", f.PID, f.Device, f.Offset, f.Length, f.Reason)
	}
	return fmt.Sprintf("%s: %d mapping(s) not given back: %s", e.Device, len(e.Failed), strings.Join(parts, "; "))
}

// Recall takes back every mapping of dev (and of tables over it) within
// timeout, telling the clients why. On success, new mappings of dev stay
// refused until release is called (after the change); on failure
// (a *RecallError) nothing stays fenced.
func (s *Server) Recall(dev *dm.Device, timeout time.Duration, reason string) (release func(), err error) {
	ds := s.trackDevice(dev)
	if ds == nil { // removed: nothing maps it
		return func() {}, nil
	}
	// Not protMu: a recall may run while a cut of the device's memory
	// lasts (the device suspended before the new table was loaded).
	ds.mapsMu.Lock()
	ds.fence.Add(1)
	maps := ds.listLocked()
	ds.mapsMu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { ds.fence.Add(-1) }) }
	if len(maps) == 0 {
		return release, nil
	}
	start := time.Now()
	deadline := start.Add(timeout)
	failures := make([]*RecallFailure, len(maps))
	var wg sync.WaitGroup
	for i, m := range maps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.recall(deadline, reason); err != nil {
				failures[i] = &RecallFailure{Holder: m.holder(), Reason: err.Error()}
			}
		}()
	}
	wg.Wait()
	s.stats.Recalls.Add(int64(len(maps)))
	s.stats.RecallNanos.Add(int64(time.Since(start)))
	rerr := &RecallError{Device: dev.Name()}
	for _, f := range failures {
		if f != nil {
			rerr.Failed = append(rerr.Failed, *f)
		}
	}
	if len(rerr.Failed) > 0 {
		s.stats.RecallFailures.Add(int64(len(rerr.Failed)))
		release()
		return nil, rerr
	}
	s.log.Info("mappings recalled", "device", dev.Name(), "mappings", len(maps), "reason", reason, "took", time.Since(start))
	return release, nil
}

func (m *mapping) holder() Holder {
	return Holder{PID: m.sess.pid, Device: m.dev.Name(), Offset: m.off, Length: m.n}
}

// answerRecall hands the client's answer to the recall under way.
func (m *mapping) answerRecall(msg wire.SessionMsg) bool {
	m.mu.Lock()
	ch := m.recallAns
	m.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- msg:
		return true
	default:
		return false
	}
}

// recall asks the client to give m back by deadline, checks its process
// no longer maps the memory, and drops m.
func (m *mapping) recall(deadline time.Time, reason string) error {
	ch := make(chan wire.SessionMsg, 1)
	m.mu.Lock()
	m.recallAns = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.recallAns = nil
		m.mu.Unlock()
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	msg := wire.SessionMsg{Op: wire.OpRecall, ID: m.id, Recall: &wire.Recall{DeadlineMS: time.Until(deadline).Milliseconds(), Reason: reason}}
	if err := m.sess.send(msg); err != nil {
		// The session is ending: its mappings are being released.
		select {
		case <-m.gone:
			return nil
		case <-timer.C:
			return fmt.Errorf("its session failed (%v) and did not end in time", err)
		}
	}
	select {
	case ans := <-ch:
		if ans.Op == wire.OpRecallRefused {
			why := "no reason given"
			if ans.Error != nil {
				why = ans.Error.Error
			}
			return fmt.Errorf("the client refused: %s", why)
		}
	case <-m.gone: // the process unmapped it (or ended) meanwhile
	case <-timer.C:
		return fmt.Errorf("no answer within the deadline")
	}
	if err := m.checkUnmapped(); err != nil {
		return err
	}
	m.sess.forget(m.id, m)
	m.drop()
	return nil
}

// checkUnmapped verifies in /proc/PID/maps that no mapping of m's memory
// files is left in m's address range.
func (m *mapping) checkUnmapped() error {
	if len(m.files) == 0 {
		return nil
	}
	lo := uint64(m.base())
	hi := lo + uint64(m.n)
	left, err := mapsFiles(m.sess.pid, lo, hi, m.files)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the process is gone
	}
	if err != nil {
		return fmt.Errorf("cannot check its address space: %w", err)
	}
	if left != "" {
		return fmt.Errorf("it said it unmapped, but its address space still maps the memory: %s", left)
	}
	return nil
}

// MapsAny reports whether process pid maps any of files anywhere in its
// address space (false also when its /proc/PID/maps cannot be read).
func MapsAny(pid int, files []backing.ID) bool {
	line, _ := mapsFiles(pid, 0, math.MaxUint64, files)
	return line != ""
}

// mapsFiles returns the first line of /proc/PID/maps that maps one of
// files in [lo, hi), or "".
func mapsFiles(pid int, lo, hi uint64, files []backing.ID) (string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(fields[0], "%x-%x", &start, &end); err != nil || end <= lo || start >= hi {
			continue
		}
		var major, minor uint32
		if _, err := fmt.Sscanf(fields[3], "%x:%x", &major, &minor); err != nil {
			continue
		}
		ino, err := strconv.ParseUint(fields[4], 10, 64)
		if err != nil {
			continue
		}
		id := backing.ID{Dev: unix.Mkdev(major, minor), Ino: ino}
		if slices.Contains(files, id) {
			return line, nil
		}
	}
	return "", sc.Err()
}
