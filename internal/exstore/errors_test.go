package exstore

import (
	"errors"
	"fmt"
	"testing"
)

func TestCorruptf(t *testing.T) {
	cause := errors.New("short read")
	err := Corruptf("metadata area %d record %d: %w", 3, 7, cause)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("Corruptf error does not match ErrCorrupt")
	}
	if !errors.Is(err, cause) {
		t.Errorf("Corruptf error does not match the error it wraps with %%w")
	}
	if got, want := err.Error(), "metadata area 3 record 7: short read"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("load /dev/x: %w", err)
	if !errors.Is(wrapped, ErrCorrupt) {
		t.Errorf("wrapping a corruption error loses ErrCorrupt")
	}
	if errors.Is(fmt.Errorf("corrupt"), ErrCorrupt) {
		t.Errorf("a plain error matches ErrCorrupt")
	}
}

func TestValidateChunkSize(t *testing.T) {
	tests := []struct {
		chunk Sector
		lbs   []int
		ok    bool
	}{
		{1, []int{512}, true},
		{8, []int{4096, 512}, true},
		{MaxChunkSize, nil, true},
		{0, nil, false},
		{3, nil, false},
		{24, []int{512}, false},
		{MaxChunkSize * 2, nil, false},
		{4, []int{512, 4096}, false},
		{16, []int{0}, true}, // unknown block size: not checked
	}
	for _, tt := range tests {
		err := ValidateChunkSize(tt.chunk, tt.lbs...)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidChunkSize)) {
			t.Errorf("ValidateChunkSize(%d, %v) = %v, want ok=%v", tt.chunk, tt.lbs, err, tt.ok)
		}
	}
}
