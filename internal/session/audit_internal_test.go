package session

import (
	"strings"
	"testing"
)

const smaps = `7f0000000000-7f0000002000 rw-s 00000000 00:1a 12 /dev/shm/a
Size:                  8 kB
VmFlags: rd wr sh mr mw me ms uw sd
7f0000002000-7f0000003000 rw-s 00001000 00:1a 13 /dev/shm/b
Size:                  4 kB
VmFlags: rd wr sh mr mw me ms sd
7f0000004000-7f0000005000 rw-s 00000000 00:1a 12 /dev/shm/a
VmFlags: rd wr sh uw
`

func TestAuditSmaps(t *testing.T) {
	cases := []struct {
		name       string
		start, end uint64
		want       string // "" for no problem
	}{
		{"protected", 0x7f0000000000, 0x7f0000002000, ""},
		{"inside-protected", 0x7f0000001000, 0x7f0000002000, ""},
		{"one-vma-without-uw", 0x7f0000000000, 0x7f0000003000, "[0x7f0000002000, 0x7f0000003000) lacks the userfaultfd write-protect flag (uw)"},
		{"hole", 0x7f0000004000 - 0x1000, 0x7f0000005000, "not mapped"},
		{"past-the-end", 0x7f0000004000, 0x7f0000006000, "[0x7f0000005000, 0x7f0000006000) is not mapped"},
		{"nothing-there", 0x1000, 0x2000, "[0x1000, 0x2000) is not mapped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := auditSmaps(strings.NewReader(smaps), []auditRange{{id: 1, start: c.start, end: c.end}})
			switch {
			case c.want == "" && len(bad) != 0:
				t.Fatalf("problem %q, want none", bad[0].reason)
			case c.want != "" && (len(bad) != 1 || !strings.Contains(bad[0].reason, c.want)):
				t.Fatalf("problems %+v, want one mentioning %q", bad, c.want)
			}
		})
	}
}
