package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Report is what Inspect finds in an image's journal, without changing
// anything.
type Report struct {
	Image     string    `json:"image"`
	Journal   string    `json:"journal"`
	Version   uint32    `json:"version"`
	Size      int64     `json:"size"`
	Chunk     int64     `json:"chunk"`
	ImageSize int64     `json:"image_file_size"`
	JournalID string    `json:"journal_id"`
	Created   time.Time `json:"created"`
	// Last is the newest complete checkpoint: what Open yields.
	Last Checkpoint `json:"last"`
	// Applied is the checkpoint the raw image file holds whole right now;
	// when it is older than Last, Open applies the journal first.
	Applied uint64 `json:"applied"`
	// FirstInterrupted: a first checkpoint was begun, written in place,
	// and not committed; the image file may hold part of it.
	FirstInterrupted bool `json:"first_interrupted,omitempty"`
	// Pending is the journal bytes of checkpoints not yet applied.
	Pending  int64         `json:"pending_bytes"`
	Slots    []SlotReport  `json:"slots"`
	Segments []SegmentInfo `json:"segments,omitempty"`
	// Problem says what is wrong, "" when Open would succeed.
	Problem string `json:"problem,omitempty"`
}

// SlotReport is one header slot.
type SlotReport struct {
	Slot      int    `json:"slot"`
	Gen       uint64 `json:"gen,omitempty"`
	Applied   uint64 `json:"applied,omitempty"`
	Committed uint64 `json:"committed,omitempty"`
	Error     string `json:"error,omitempty"`
}

// SegmentInfo is one checked journal segment of a pending checkpoint.
type SegmentInfo struct {
	Offset int64   `json:"offset"`
	Seq    uint64  `json:"seq"`
	Chunks []int64 `json:"chunks"`
	Bytes  int64   `json:"bytes"`
}

// Inspect reads the image at path and its journal and reports what they
// hold, checking every pending segment. A journal that Open would refuse
// yields a Report whose Problem says why, and that error.
func Inspect(path string, opt Options) (Report, error) {
	rep := Report{Image: path}
	jpath, err := journalPath(path, opt)
	if err != nil {
		return rep, err
	}
	rep.Journal = jpath
	img, err := openFile(path, false)
	if err != nil {
		return rep, rep.fail(err)
	}
	defer img.Close()
	j, err := openFile(jpath, false)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("the journal of %s is missing: %w (give its path in the journal option if it lives elsewhere)", path, err)
		}
		return rep, rep.fail(err)
	}
	defer j.Close()
	return InspectOn(img, j, &rep)
}

// InspectOn is Inspect over devices the caller opened; rep carries the
// names to report (it may be nil).
func InspectOn(image, journal Dev, rep *Report) (Report, error) {
	if rep == nil {
		rep = &Report{Image: "image", Journal: "journal"}
	}
	rep.ImageSize = image.Size()
	h, slots, err := readHeader(journal, rep.Journal)
	for i, s := range slots {
		sr := SlotReport{Slot: i}
		if s.err != nil {
			sr.Error = s.err.Error()
		} else {
			sr.Gen, sr.Applied, sr.Committed = s.h.Gen, s.h.Applied, s.h.Committed
		}
		rep.Slots = append(rep.Slots, sr)
	}
	if err != nil {
		return *rep, rep.fail(err)
	}
	rep.Version, rep.Size, rep.Chunk = h.Version, h.Size, h.Chunk
	rep.JournalID = fmt.Sprintf("%016x", h.JournalID)
	rep.Created = time.Unix(0, h.Created).UTC()
	rep.Last, rep.Applied, rep.Pending = h.last(), h.Applied, h.End-dataStart
	rep.FirstInterrupted = h.Flags&flagFirst != 0
	if rep.Last.Seq > 0 {
		rep.Last.Time = rep.Last.Time.UTC()
	}
	if rep.ImageSize < h.Size {
		return *rep, rep.fail(fmt.Errorf("%w: image %s is %d bytes, its journal describes %d: the image was truncated or the journal belongs to another image",
			ErrCorrupt, rep.Image, rep.ImageSize, h.Size))
	}
	err = scan(journal, h, rep.Journal, descSize+4<<20, func(d desc, _ []byte) error {
		si := SegmentInfo{Seq: d.Seq, Bytes: d.Data}
		for _, e := range d.Entries {
			si.Chunks = append(si.Chunks, e.Chunk)
		}
		rep.Segments = append(rep.Segments, si)
		return nil
	})
	if err != nil {
		return *rep, rep.fail(err)
	}
	var off int64 = dataStart
	for i := range rep.Segments {
		rep.Segments[i].Offset = off
		off += descSize + rep.Segments[i].Bytes
	}
	return *rep, nil
}

func (r *Report) fail(err error) error {
	r.Problem = err.Error()
	return err
}

// Write prints the report as text; summary leaves out the line per
// pending segment.
func (r Report) Write(w io.Writer, summary bool) error {
	var errs []error
	p := func(format string, a ...any) {
		_, err := fmt.Fprintf(w, format, a...)
		errs = append(errs, err)
	}
	p("image:      %s (%d bytes)\n", r.Image, r.ImageSize)
	p("journal:    %s\n", r.Journal)
	for _, s := range r.Slots {
		if s.Error != "" {
			p("slot %d:     bad: %s\n", s.Slot, s.Error)
		} else {
			p("slot %d:     generation %d, applied %d, committed %d\n", s.Slot, s.Gen, s.Applied, s.Committed)
		}
	}
	if r.Version != 0 {
		p("format:     version %d, size %d bytes, chunk %d bytes, journal id %s, created %s\n",
			r.Version, r.Size, r.Chunk, r.JournalID, r.Created.Format(time.RFC3339))
		if r.Last.Seq == 0 {
			p("last:       none (no checkpoint yet)\n")
		} else {
			p("last:       checkpoint %d at %s, %d bytes in %d chunks\n",
				r.Last.Seq, r.Last.Time.Format(time.RFC3339Nano), r.Last.Bytes, r.Last.Chunks)
		}
		if r.FirstInterrupted {
			p("image file: holds no checkpoint, maybe part of an interrupted first one (it is written in place): the next first checkpoint zeroes it\n")
		} else if r.Last.Seq == 0 {
			p("image file: holds no checkpoint yet (reads as zeroes)\n")
		} else if r.Applied == r.Last.Seq {
			p("image file: holds checkpoint %d (a plain raw image)\n", r.Applied)
		} else {
			p("image file: holds checkpoint %d; checkpoint %d waits in the journal (%d bytes): opening the image applies it\n",
				r.Applied, r.Last.Seq, r.Pending)
		}
	}
	if !summary {
		for _, s := range r.Segments {
			p("segment:    byte %d, checkpoint %d, %d chunks, %d bytes\n", s.Offset, s.Seq, len(s.Chunks), s.Bytes)
		}
	}
	if r.Problem != "" {
		p("problem:    %s\n", r.Problem)
	}
	return errors.Join(errs...)
}
