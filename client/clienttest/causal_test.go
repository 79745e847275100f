package clienttest

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// run interleaves n writers over mem for steps steps, in a random order,
// and returns copies of mem taken at the given steps.
func run(t *testing.T, mem []byte, n, steps int, rng *rand.Rand, at map[int]bool) [][]byte {
	t.Helper()
	ws := make([]*causalWriter, n)
	for w := range ws {
		var err error
		if ws[w], err = newCausalWriter(mem, w, n); err != nil {
			t.Fatal(err)
		}
	}
	var imgs [][]byte
	for i := 0; i < steps; i++ {
		if at[i] {
			imgs = append(imgs, append([]byte(nil), mem...))
		}
		ws[rng.IntN(n)].step()
	}
	return imgs
}

func TestCheckCausal_ConsistentImages(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	mem := make([]byte, 64*pageSize)
	imgs := run(t, mem, 4, 20000, rng, map[int]bool{0: true, 5: true, 3000: true, 19999: true})
	for i, img := range imgs {
		if _, err := CheckCausal(img, 4); err != nil {
			t.Errorf("image %d, a real point in time: %v", i, err)
		}
	}
	// A record torn by the cut (seq written, check not yet) is allowed.
	torn := append([]byte(nil), imgs[2]...)
	last, _ := CheckCausal(torn, 4)
	l, _ := layout(len(torn), 4)
	off := l.record(1, int(last[1]%uint64(l.slots)))
	torn[off] ^= 0xff
	if _, err := CheckCausal(torn, 4); err != nil {
		t.Errorf("a torn next record was refused: %v", err)
	}
}

// TestCheckCausal_MixedImages: pages from two points in time, the way a
// broken cut mixes them, are caught.
func TestCheckCausal_MixedImages(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	mem := make([]byte, 64*pageSize)
	imgs := run(t, mem, 4, 20000, rng, map[int]bool{4000: true, 8000: true})
	early, late := imgs[0], imgs[1]
	l, _ := layout(len(mem), 4)
	for _, tc := range []struct {
		name  string
		pages func(p int) bool // pages taken from the late image
		msg   string
	}{
		{"late-writer-early-others", func(p int) bool { return p >= 1+2*l.regionPages && p < 1+3*l.regionPages }, "which the image lacks"},
		{"late-progress", func(p int) bool { return p == 0 }, "progress of writer"},
		{"late-page-of-one-writer", func(p int) bool { return p == 1 }, "writer 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := append([]byte(nil), early...)
			for p := 0; p < len(img)/pageSize; p++ {
				if tc.pages(p) {
					copy(img[p*pageSize:(p+1)*pageSize], late[p*pageSize:])
				}
			}
			if _, err := CheckCausal(img, 4); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("mixed image: %v, want an error mentioning %q", err, tc.msg)
			}
		})
	}
}
