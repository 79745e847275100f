//go:build !amd64

package persist

import (
	"fmt"
	"runtime"
)

// Flush makes the stores to b durable. Without cache write-back
// instructions written for this architecture it falls back to msync of the
// enclosing pages, which the kernel turns into the right cache maintenance
// for DAX mappings; b must therefore lie in a shared file mapping.
func Flush(b []byte) error {
	if err := Msync(b); err != nil {
		return fmt.Errorf("persist flush (msync fallback on %s): %w", runtime.GOARCH, err)
	}
	return nil
}
