package backup

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"
)

// Ensure that overlay lays pieces over a tiling exactly: the bytes it
// describes equal a byte-level model, and the result still tiles.
func TestOverlay_matchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		size := rapid.Int64Range(1, 200).Draw(t, "size")
		// objects: name -> content; the base tiles [0,size) from object "b".
		objs := map[string][]byte{"b": make([]byte, size)}
		for i := range objs["b"] {
			objs["b"][i] = byte(i)
		}
		model := bytes.Clone(objs["b"])
		base := []Extent{{Off: 0, Len: size, Object: "b", ObjLen: size}}
		for round := range rapid.IntRange(1, 4).Draw(t, "rounds") {
			var pieces []Extent
			for at := int64(0); at < size; {
				at += rapid.Int64Range(0, size).Draw(t, "gap")
				if at >= size {
					break
				}
				ln := rapid.Int64Range(1, size-at).Draw(t, "len")
				name := string(rune('c' + round))
				if rapid.Bool().Draw(t, "zero") {
					name = ""
					clear(model[at : at+ln])
				} else {
					name += string(rune('0' + len(pieces)))
					content := make([]byte, ln)
					for i := range content {
						content[i] = byte(round*7 + len(pieces)*13 + i)
					}
					objs[name] = content
					copy(model[at:], content)
				}
				e := Extent{Off: at, Len: ln, Object: name}
				if name != "" {
					e.ObjLen = ln
				}
				pieces = append(pieces, e)
				at += ln
			}
			base = overlay(base, pieces)
			got := make([]byte, size)
			var at int64
			for _, e := range base {
				if e.Off != at || e.Len <= 0 {
					t.Fatalf("extents do not tile: %+v", base)
				}
				if e.Object != "" {
					copy(got[e.Off:e.end()], objs[e.Object][e.ObjOff:e.ObjOff+e.Len])
				}
				at = e.end()
			}
			if at != size || !bytes.Equal(got, model) {
				t.Fatalf("overlay describes other bytes than the model: %+v", base)
			}
		}
	})
}

// Ensure that a manifest survives encoding and that every damage to it
// is caught.
func TestManifest_decodeRefuses(t *testing.T) {
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, Name: "s", Size: 10, ObjectSize: ObjectSize,
		Extents: []Extent{{Off: 0, Len: 4}, {Off: 4, Len: 6, Object: "aa" + string(bytes.Repeat([]byte("0"), 62)), ObjLen: 6}}}
	data, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeManifest(data, "s"); err != nil {
		t.Fatalf("a good manifest: %v", err)
	}
	for what, c := range map[string]struct {
		data []byte
		name string
	}{
		"truncated": {data[:len(data)-3], "s"},
		"renamed":   {data, "t"},
		"edited":    {bytes.Replace(data, []byte(`"len": 6`), []byte(`"len": 5`), 1), "s"},
		"empty":     {nil, "s"},
	} {
		if _, err := decodeManifest(c.data, c.name); err == nil {
			t.Errorf("%s manifest accepted", what)
		}
	}
	short := *m
	short.Extents = short.Extents[:1]
	if short.check() == nil {
		t.Error("a manifest whose extents stop short was accepted")
	}
}
