package daemon

import "testing"

// replaceFields rewrites the target arguments a rename changes, leaves
// every other line of the table byte for byte as it was (the blank dm
// prints after an argument-less target included), never touches start,
// length or target type, and leaves text that is not a table alone.
func TestReplaceFields(t *testing.T) {
	with := map[string]string{"/dev/mapper/a": "/dev/mapper/b", "8": "X", "linear": "X"}
	for _, c := range []struct{ in, want string }{
		{"0 8 linear /dev/mapper/a 0\n8 8 zero \n", "0 8 linear /dev/mapper/b 0\n8 8 zero \n"},
		{"0 8 zero \n", "0 8 zero \n"},
		{"0 16 striped 2 8 /dev/mapper/a 0 /x 0\n", "0 16 striped 2 X /dev/mapper/b 0 /x 0\n"},
		{"not a table /dev/mapper/a", "not a table /dev/mapper/a"},
		{"", ""},
	} {
		if got := replaceFields(c.in, with); got != c.want {
			t.Errorf("replaceFields(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
