package main

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"4096": 4096, "64M": 64 << 20, "64m": 64 << 20, "4G": 4 << 30, "4GiB": 4 << 30,
		"4GB": 4 << 30, "1T": 1 << 40, "512K": 512 << 10, " 2M ": 2 << 20,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1M", "4X", "G", "1.5G", "99999999999T", "4 G"} {
		if n, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, n)
		}
	}
	for n, want := range map[int64]string{4 << 30: "4GiB", 1536 << 10: "1536KiB", 1000: "1000B", 1 << 20: "1MiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
