package main

import (
	"fmt"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}}

// parseSize reads a byte count with an optional K, M, G or T suffix
// (powers of 1024; "iB" or "B" after it is allowed): 4G, 64MiB, 4096.
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := uint(0)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, shift = rest, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("invalid size %q: use a positive number with an optional K, M, G or T suffix (powers of 1024), e.g. 64M or 4G", s)
	}
	return n << shift, nil
}

// formatSize prints bytes in the largest unit that divides them.
func formatSize(n int64) string {
	for _, u := range sizeUnits {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%siB", n>>u.shift, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}
