package targettest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
)

// Recording is a fake TB that records failures, so a test can show that
// the suite fails on a deliberately broken target. FailNow ends the
// goroutine running the suite, as testing.T's does.
type Recording struct {
	mu     sync.Mutex
	failed bool
	logs   []string
}

// Record runs suite (Check, RunTable, RunSnapshot...) on a Recording in
// a goroutine of its own and returns it when the suite has finished.
func Record(suite func(TB)) *Recording {
	r := &Recording{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		suite(r)
	}()
	<-done
	return r
}

// Logs returns everything the suite logged and reported, one per line.
func (r *Recording) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.logs, "\n")
}

func (r *Recording) Helper()      {}
func (r *Recording) Name() string { return "recording" }
func (r *Recording) Log(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, fmt.Sprint(args...))
}
func (r *Recording) Logf(format string, args ...any) { r.Log(fmt.Sprintf(format, args...)) }
func (r *Recording) Error(args ...any)               { r.Log(args...); r.Fail() }
func (r *Recording) Errorf(format string, args ...any) {
	r.Logf(format, args...)
	r.Fail()
}
func (r *Recording) Fatal(args ...any)                 { r.Error(args...); r.FailNow() }
func (r *Recording) Fatalf(format string, args ...any) { r.Errorf(format, args...); r.FailNow() }
func (r *Recording) Skip(args ...any)                  { r.Log(args...); r.SkipNow() }
func (r *Recording) Skipf(format string, args ...any)  { r.Logf(format, args...); r.SkipNow() }
func (r *Recording) SkipNow()                          { runtime.Goexit() }
func (r *Recording) FailNow()                          { r.Fail(); runtime.Goexit() }
func (r *Recording) Fail() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
}
func (r *Recording) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}
