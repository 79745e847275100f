package pmem

import (
	"os"
	"strconv"
	"strings"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// info describes a region, with the devices using it and a note if
// its file is gone or changed.
func (m *Manager) info(rec state.Region) wire.Pmem {
	p := wire.Pmem{Name: rec.Name, Path: rec.Path, Size: rec.Size, Hugetlb: rec.Hugetlb,
		Filesystem: "tmpfs", UsedBy: m.users(rec.Path)}
	if rec.Hugetlb {
		p.Filesystem = "hugetlbfs"
	}
	o, problem := regionOwner(rec)
	p.UID, p.GID, p.Mode = o.UID, o.GID, access.FormatMode(o.Mode)
	if problem != "" {
		p.Note = problem + ": recreate the region with the owner you want"
	}
	fi, err := os.Lstat(rec.Path)
	if err == nil {
		if cerr := CheckFile(rec); cerr != nil {
			p.Note = "file refused: " + cerr.Error()
			return p
		}
	}
	switch {
	case err != nil:
		p.Note = "file missing (" + err.Error() + "): tables naming it fail to load; `daxsnap pmem remove " + rec.Name + "` forgets it"
	case fi.Size() != rec.Size:
		p.Note = "file is " + strconv.FormatInt(fi.Size(), 10) + " bytes, not the " + strconv.FormatInt(rec.Size, 10) + " it was created with"
		if fi.Size() < rec.Size {
			p.Note += ": it was truncated (by root, or by a user its --uid/--gid/--mode let map it writable), and the devices on it fail with I/O errors past its end: " +
				"save what you can, remove them, and recreate the region"
		}
	}
	return p
}

// users lists the devices whose tables (live, inactive, or kept while
// serving `error`) name path, or the same file by another path.
func (m *Manager) users(path string) []string {
	target, _ := os.Stat(path) // nil when stat fails: compare names only
	var users []string
	for _, t := range m.host.Tables() {
		if namesFile(t.Tables, path, target) {
			users = append(users, t.Device)
		}
	}
	return users
}

// namesFile reports whether a target argument of one of the tables is
// path or, if target is not nil, the same file as target. A table is read
// with dm's table grammar; an empty slot has none.
func namesFile(tables []string, path string, target os.FileInfo) bool {
	for _, text := range tables {
		lines, _ := dm.ParseTable(text)
		for _, l := range lines {
			for _, arg := range l.Args {
				if arg == path {
					return true
				}
				if target != nil && strings.HasPrefix(arg, "/") && !strings.HasPrefix(arg, dm.MapperPrefix) {
					if fi, err := os.Stat(arg); err == nil && os.SameFile(fi, target) {
						return true
					}
				}
			}
		}
	}
	return false
}
