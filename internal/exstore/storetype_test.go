package exstore_test

import (
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Every store type prints as the kernel's table does and parses back,
// in either case.
func TestStoreType_roundTrip(t *testing.T) {
	for _, c := range []struct {
		typ  exstore.StoreType
		text string
		pers bool
	}{
		{exstore.Persistent, "P", true},
		{exstore.PersistentOverflow, "PO", true},
		{exstore.Transient, "N", false},
	} {
		if got := c.typ.String(); got != c.text {
			t.Errorf("%v.String() = %q, want %q", uint8(c.typ), got, c.text)
		}
		for _, in := range []string{c.text, strings.ToLower(c.text)} {
			got, err := exstore.ParseStoreType(in)
			if err != nil || got != c.typ {
				t.Errorf("ParseStoreType(%q) = %v, %v; want %v", in, got, err, c.typ)
			}
		}
		if c.typ.IsPersistent() != c.pers {
			t.Errorf("%v.IsPersistent() = %v, want %v", c.typ, !c.pers, c.pers)
		}
	}
}

// Anything but P, PO and N is refused with an error naming the three.
func TestStoreType_refused(t *testing.T) {
	for _, in := range []string{"", "X", "POO", "PN", "O", " P", "P ", "persistent"} {
		if typ, err := exstore.ParseStoreType(in); err == nil || !strings.Contains(err.Error(), "want P (persistent), PO") {
			t.Errorf("ParseStoreType(%q) = %v, %v; want an error naming P, PO and N", in, typ, err)
		}
	}
	if s := exstore.StoreType(0).String(); s != "StoreType(0)" {
		t.Errorf("zero StoreType prints %q", s)
	}
}

// ParseStoreType never panics, and what it accepts prints back as the
// upper-case text it was given.
func FuzzParseStoreType(f *testing.F) {
	for _, s := range []string{"P", "po", "N", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		typ, err := exstore.ParseStoreType(s)
		if err != nil {
			return
		}
		if typ.String() != strings.ToUpper(s) {
			t.Fatalf("ParseStoreType(%q) = %v, which prints as %q", s, typ, typ.String())
		}
		if again, err := exstore.ParseStoreType(typ.String()); err != nil || again != typ {
			t.Fatalf("ParseStoreType(%q) = %v, %v; want %v", typ.String(), again, err, typ)
		}
	})
}
