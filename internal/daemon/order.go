package daemon

import (
	"slices"
	"strings"
)

// MapperPrefix is how a table names another mapped device.
const MapperPrefix = "/dev/mapper/"

// mapperRefs lists the mapped devices a table text names (/dev/mapper/X
// as a target argument), each once, in order of appearance.
func mapperRefs(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		for _, arg := range f[3:] {
			if name, ok := strings.CutPrefix(arg, MapperPrefix); ok && name != "" && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}

// dependencyOrder sorts names so that every device comes after the
// devices its tables name (deps[name]); ties go by name. Names caught in
// a cycle, which loads never allow, come last in name order.
func dependencyOrder(deps map[string][]string) []string {
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	slices.Sort(names)
	done := make(map[string]bool, len(names))
	var out []string
	for progress := true; progress; {
		progress = false
		for _, n := range names {
			if !done[n] && depsDone(deps[n], deps, done) {
				done[n], progress = true, true
				out = append(out, n)
			}
		}
	}
	for _, n := range names {
		if !done[n] {
			out = append(out, n)
		}
	}
	return out
}

// depsDone: every dependency that is itself a known device is done.
func depsDone(refs []string, deps map[string][]string, done map[string]bool) bool {
	for _, r := range refs {
		if _, known := deps[r]; known && !done[r] {
			return false
		}
	}
	return true
}

// reaches reports whether from's tables name to, directly or through
// other devices.
func reaches(deps map[string][]string, from, to string) bool {
	seen := map[string]bool{}
	stack := []string{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == to {
			return true
		}
		if !seen[n] {
			seen[n] = true
			stack = append(stack, deps[n]...)
		}
	}
	return false
}
