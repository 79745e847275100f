package daemon

import (
	"fmt"
	"strings"
	"testing"
)

// Ensure that the --tls-authz file maps subjects to users, skips
// comments and blank lines, and refuses what it cannot read, by line.
func TestParseAuthz(t *testing.T) {
	m, err := parseAuthz([]byte("# map\n\nalice CN=alice,O=Example Org\n1000\tCN=bob\n  65534   CN=x\\,y  \n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CN=alice,O=Example Org": "alice", "CN=bob": "1000", `CN=x\,y`: "65534"}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Fatalf("parseAuthz = %v, want %v", m, want)
	}
	for in, msg := range map[string]string{
		"alice\n":                      `line 1: "alice" is not "USER SUBJECT"`,
		"alice CN=a\nbob CN=a\n":       `line 2: subject "CN=a" is mapped again`,
		"4294967295 CN=a\n":            "neither a user name nor a uid",
		"al/ice CN=a\n":                "neither a user name nor a uid",
		"-x CN=a\n":                    "neither a user name nor a uid",
		"alice alice\n":                "has no attribute=value",
		"# fine\nalice CN=a\nbob   \n": `line 3`,
	} {
		if _, err := parseAuthz([]byte(in)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseAuthz(%q) = %v, want an error with %q", in, err, msg)
		}
	}
}

// FuzzParseAuthz: any file is read or refused, never a panic, and what
// is read maps non-empty subjects to valid users and reads back the same.
func FuzzParseAuthz(f *testing.F) {
	for _, s := range []string{"alice CN=alice,O=Example\n", "# c\n\n0 CN=root\n", "x", "1 =\n2 =\n", "a\tCN=b\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseAuthz(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for subject, u := range m {
			if subject == "" || !validUser(u) || !strings.Contains(subject, "=") {
				t.Fatalf("parseAuthz(%q) mapped %q to %q", data, subject, u)
			}
			fmt.Fprintf(&b, "%s %s\n", u, subject)
		}
		again, err := parseAuthz([]byte(b.String()))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(m) {
			t.Fatalf("parseAuthz(%q) = %v; written back and read again: %v, %v", data, m, again, err)
		}
	})
}
