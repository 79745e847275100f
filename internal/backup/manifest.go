package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// Manifest format and version: a reader refuses any other.
const (
	ManifestFormat  = "daxsnap-backup"
	ManifestVersion = 1
)

// ObjectSize is the largest object a backup writes: 2 MiB. A full backup
// cuts the volume into 2 MiB pieces aligned to 2 MiB (few objects: 2048
// per 4 GiB, each one PUT, a restart loses at most the ones in flight);
// an incremental one cuts only the changed extents, on the same grid, so
// a changed 4 KiB chunk costs 4 KiB, not 2 MiB.
const ObjectSize = 2 << 20

// maxManifest bounds what a manifest download may be (a 16 TiB volume in
// 2 MiB extents is 8M extents: far less than this at ~100 bytes each
// would need more; such volumes want a bigger ObjectSize).
const maxManifest = 1 << 30

// Extent is a run of the volume: Len bytes at Off, which are the bytes
// [ObjOff, ObjOff+Len) of the object whose SHA-256 is Object (ObjLen
// bytes long), or zeros when Object is empty.
type Extent struct {
	Off    int64  `json:"off"`
	Len    int64  `json:"len"`
	Object string `json:"sha256,omitempty"`
	ObjOff int64  `json:"obj_off,omitempty"`
	ObjLen int64  `json:"obj_len,omitempty"`
}

func (e Extent) end() int64 { return e.Off + e.Len }

// slice is the part [from, to) of e (from and to inside e).
func (e Extent) slice(from, to int64) Extent {
	s := Extent{Off: from, Len: to - from, Object: e.Object}
	if e.Object != "" {
		s.ObjOff, s.ObjLen = e.ObjOff+from-e.Off, e.ObjLen
	}
	return s
}

// Manifest describes one backed-up snapshot. Its extents tile the volume
// [0, Size) in order, without gaps (zeros are extents too), so a manifest
// that lost extents does not verify.
type Manifest struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Name    string    `json:"name"`   // the snapshot's name, also the manifest's key
	Origin  string    `json:"origin"` // the volume it is a snapshot of, when known
	Created time.Time `json:"created"`
	Size    int64     `json:"size"` // bytes
	// ObjectSize is the largest object and the grid objects are cut on.
	ObjectSize int64 `json:"object_size"`
	// Parent is the snapshot this one was backed up as an increment of
	// (--since), and ParentSHA256 the SHA-256 of the parent's manifest
	// object; both empty for a full backup.
	Parent       string `json:"parent,omitempty"`
	ParentSHA256 string `json:"parent_sha256,omitempty"`
	// Changed is how many bytes the increment read from the snapshot
	// (Size for a full backup, or one read whole).
	Changed int64 `json:"changed_bytes"`
	// ChangedChunks is how many chunks a checkpoint wrote back (a
	// checkpoint's manifest only: checkpoints.go).
	ChangedChunks int64    `json:"changed_chunks,omitempty"`
	Extents       []Extent `json:"extents"`
	// Checksum is the SHA-256 of this manifest's JSON with Checksum empty.
	Checksum string `json:"checksum"`
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
	sumRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// checkName refuses a snapshot name that cannot be a manifest key.
func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("snapshot name %q cannot name a backup: use letters, digits, '.', '_', '+', '-' (at most 128, not starting with a symbol)", name)
	}
	return nil
}

// encode seals m with its checksum and returns its JSON.
func (m *Manifest) encode() ([]byte, error) {
	m.Checksum = ""
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	m.Checksum = hex.EncodeToString(sum[:])
	return json.MarshalIndent(m, "", " ")
}

// decodeManifest parses and verifies the manifest object data, which must
// describe snapshot name.
func decodeManifest(data []byte, name string) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a readable manifest (%v): it is truncated or corrupt", err)
	}
	if m.Format != ManifestFormat || m.Version != ManifestVersion {
		return nil, fmt.Errorf("format %q version %d, this daxsnap reads %q version %d", m.Format, m.Version, ManifestFormat, ManifestVersion)
	}
	want := m.Checksum
	body, err := json.Marshal(func() Manifest { c := m; c.Checksum = ""; return c }())
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != want {
		return nil, fmt.Errorf("checksum mismatch (recorded %.16s…, content %.16s…): the manifest is corrupt or was edited", want, hex.EncodeToString(sum[:]))
	}
	if m.Name != name {
		return nil, fmt.Errorf("it describes snapshot %q, not %q: a manifest was copied or replayed under another name", m.Name, name)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// check verifies the extents tile [0, Size) with sane objects.
func (m *Manifest) check() error {
	if m.Size <= 0 || m.ObjectSize <= 0 || m.ObjectSize > 1<<30 {
		return fmt.Errorf("size %d, object size %d: not a valid manifest", m.Size, m.ObjectSize)
	}
	if (m.Parent == "") != (m.ParentSHA256 == "") || (m.ParentSHA256 != "" && !sumRE.MatchString(m.ParentSHA256)) {
		return fmt.Errorf("parent %q with parent checksum %q: not a valid manifest", m.Parent, m.ParentSHA256)
	}
	var at int64
	for i, e := range m.Extents {
		switch {
		case e.Off != at || e.Len <= 0:
			return fmt.Errorf("extent %d (%d bytes at %d) does not follow the one before (which ends at %d): the manifest is corrupt", i, e.Len, e.Off, at)
		case e.Object == "" && (e.ObjOff != 0 || e.ObjLen != 0):
			return fmt.Errorf("extent %d is zeros but names an object range: the manifest is corrupt", i)
		case e.Object != "" && (!sumRE.MatchString(e.Object) || e.ObjLen <= 0 || e.ObjLen > m.ObjectSize || e.ObjOff < 0 || e.ObjOff+e.Len > e.ObjLen):
			return fmt.Errorf("extent %d (object %q, bytes %d+%d of %d) is not a valid object range: the manifest is corrupt", i, e.Object, e.ObjOff, e.Len, e.ObjLen)
		}
		at = e.end()
	}
	if at != m.Size {
		return fmt.Errorf("extents cover %d of %d bytes: the manifest is truncated or corrupt", at, m.Size)
	}
	return nil
}

// overlay returns base (a tiling) with pieces (sorted, disjoint, inside
// it) laid over it, merging neighbouring zero extents.
func overlay(base, pieces []Extent) []Extent {
	base = append([]Extent(nil), base...)
	out := make([]Extent, 0, len(base)+2*len(pieces))
	add := func(e Extent) {
		if n := len(out); n > 0 && e.Object == "" && out[n-1].Object == "" {
			out[n-1].Len += e.Len
			return
		}
		out = append(out, e)
	}
	bi := 0
	for _, p := range pieces {
		for bi < len(base) && base[bi].Off < p.Off {
			b := base[bi]
			if b.end() <= p.Off {
				add(b)
				bi++
				continue
			}
			add(b.slice(b.Off, p.Off))
			base[bi] = b.slice(p.Off, b.end())
		}
		add(p)
		for bi < len(base) && base[bi].end() <= p.end() {
			bi++
		}
		if bi < len(base) && base[bi].Off < p.end() {
			base[bi] = base[bi].slice(p.end(), base[bi].end())
		}
	}
	for ; bi < len(base); bi++ {
		add(base[bi])
	}
	return out
}
