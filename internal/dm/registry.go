package dm

import (
	"fmt"
	"sort"
	"sync"
)

// Registry holds the target types a table may name (the kernel's target
// list). It is filled once at start-up by target/all.Register.
type Registry struct {
	mu    sync.RWMutex
	types map[string]*TargetType
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{types: make(map[string]*TargetType)}
}

// Register adds a target type; registering a name twice is a programming
// error and panics.
func (r *Registry) Register(tt *TargetType) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.types[tt.Name]; dup {
		panic(fmt.Sprintf("dm: target type %q registered twice", tt.Name))
	}
	r.types[tt.Name] = tt
}

// Lookup returns the target type called name.
func (r *Registry) Lookup(name string) (*TargetType, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	tt, ok := r.types[name]
	return tt, ok
}

// Types lists the registered types sorted by name (dmsetup targets).
func (r *Registry) Types() []*TargetType {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*TargetType, 0, len(r.types))
	for _, tt := range r.types {
		out = append(out, tt)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names lists the registered type names, sorted.
func (r *Registry) Names() []string {
	var names []string
	for _, tt := range r.Types() {
		names = append(names, tt.Name)
	}
	return names
}
