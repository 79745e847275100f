package daemon

import (
	"slices"
	"sync"
)

// nameLocks serialises operations per device name.
type nameLocks struct {
	mu    sync.Mutex
	locks map[string]*nameLock
}

type nameLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks every name (in sorted order, so two callers never deadlock)
// and returns the unlock function.
func (l *nameLocks) lock(names ...string) (unlock func()) {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	held := make([]*nameLock, 0, len(names))
	for _, n := range names {
		nl := l.ref(n)
		nl.mu.Lock()
		held = append(held, nl)
	}
	return func() {
		for i, nl := range held {
			nl.mu.Unlock()
			l.unref(names[i], nl)
		}
	}
}

func (l *nameLocks) ref(name string) *nameLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = make(map[string]*nameLock)
	}
	nl := l.locks[name]
	if nl == nil {
		nl = &nameLock{}
		l.locks[name] = nl
	}
	nl.refs++
	return nl
}

func (l *nameLocks) unref(name string, nl *nameLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	nl.refs--
	if nl.refs == 0 {
		delete(l.locks, name)
	}
}
