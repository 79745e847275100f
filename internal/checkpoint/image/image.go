package image

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Options say where the journal is and how the image is written.
type Options struct {
	// JournalPath is the journal's file; "" means PATH+".journal". It is
	// required when PATH is a block device (the journal can be a file or
	// another block device).
	JournalPath string
	// SegmentBytes is the most chunk data gathered into one journal write
	// (0: 4 MiB; at most 508 chunks go in one segment, and a chunk larger
	// than this goes alone). Small values are for tests.
	SegmentBytes int64
	// ApplyCache is how many bytes of a checkpoint's chunks are kept in
	// memory after they are written to the journal, so that applying a
	// checkpoint that fits needs no read of the journal (0: 64 MiB;
	// negative: none, every apply reads the journal back).
	ApplyCache int64
}

// Checkpoint describes one complete checkpoint.
type Checkpoint struct {
	Seq    uint64    // 1, 2, ...; 0: none yet
	Time   time.Time // the time given to Commit
	Bytes  int64     // bytes written back by it
	Chunks int64     // chunks written back by it
}

// Errors callers may test with errors.Is.
var (
	// ErrCorrupt marks a journal or header that is damaged or truncated.
	ErrCorrupt = errors.New("checkpoint journal is damaged")
	// ErrNotApplied marks a checkpoint that is durable in the journal but
	// not yet in the image (applying it failed); Open or the next Begin
	// applies it.
	ErrNotApplied = errors.New("checkpoint is durable in the journal but not applied to the image")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("checkpoint image is closed")
)

// Image is an open durable image and its journal. ReadAt may be called
// from any goroutine; at most one Txn is open at a time.
type Image struct {
	image, journal Dev
	closers        []func() error
	names          [2]string // image, journal: for messages
	size, chunk    int64     // fixed at Create

	mu       sync.RWMutex // guards everything below
	h        header
	txn      *Txn
	applying chan struct{} // non-nil while a background apply owns the devices; closed when it ends
	unappl   error         // non-nil: committed > applied and applying failed
	closed   bool
	dead     bool     // a header write failed: reopen to learn the state
	seg      int64    // segment data bytes
	bufs     [][]byte // segment buffers for the next Txn
	cache    int64    // Options.ApplyCache
}

// Create makes a new image of size bytes in chunks of chunk bytes at path
// (a new regular file, or an existing block device at least size bytes
// long, with opt.JournalPath set) and its journal, which must not exist.
// The image reads as zeroes until the first checkpoint.
func Create(path string, size, chunk int64, opt Options) (*Image, error) {
	jpath, err := journalPath(path, opt)
	if err != nil {
		return nil, err
	}
	if err := checkGeometry(size, chunk); err != nil {
		return nil, fmt.Errorf("create checkpoint image %s: %w", path, err)
	}
	img, made, err := openImageFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("create checkpoint image: %w", err)
	}
	undo := func() {
		img.Close()
		if made {
			os.Remove(path)
		}
	}
	if img.block {
		if img.Size() < size {
			undo()
			return nil, fmt.Errorf("create checkpoint image %s: block device of %d bytes, smaller than the image (%d)", path, img.Size(), size)
		}
	} else if err := img.allocate(size); err != nil {
		undo()
		return nil, fmt.Errorf("create checkpoint image %s: %w", path, err)
	} else if err := img.Flush(); err != nil { // its size, before a journal names it
		undo()
		return nil, fmt.Errorf("create checkpoint image %s: %w", path, err)
	}
	j, jmade, err := openImageFile(jpath, true)
	if err != nil {
		undo()
		return nil, fmt.Errorf("create checkpoint journal: %w", err)
	}
	var im *Image
	if img.block {
		// Zeroes first: a journal that exists says the image is zero.
		err = zeroDevice(img, size, chunk)
	}
	if err == nil {
		im, err = CreateOn(img, j, size, chunk, opt)
	}
	if err == nil {
		err = syncDirs(path, jpath)
	}
	if err != nil {
		j.Close()
		if jmade {
			os.Remove(jpath)
		}
		undo()
		return nil, fmt.Errorf("create checkpoint image %s: %w", path, err)
	}
	im.names = [2]string{path, jpath}
	im.closers = []func() error{img.Close, j.Close}
	return im, nil
}

// openImageFile opens path, creating it (exclusively) when create is set
// and it does not exist; an existing block device is opened as it is.
func openImageFile(path string, create bool) (f *file, made bool, err error) {
	if create {
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
			f, err := openFile(path, false)
			return f, false, err
		}
	}
	f, err = openFile(path, create)
	return f, err == nil && create, err
}

func syncDirs(paths ...string) error {
	for _, p := range paths {
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// zeroDevice writes zeroes over a block device's first size bytes, so
// that checkpoint 0 reads as zeroes there as in a new file.
func zeroDevice(d Dev, size, chunk int64) error {
	buf := alignedBuf(max(chunk, 1<<20))
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := writeFull(d, buf[:min(int64(len(buf)), size-off)], off); err != nil {
			return err
		}
	}
	return d.Flush()
}

func journalPath(path string, opt Options) (string, error) {
	if opt.JournalPath != "" {
		return opt.JournalPath, nil
	}
	if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
		return "", fmt.Errorf("checkpoint image %s is a block device: give its journal's path (a file or another block device) in the journal option", path)
	}
	return path + ".journal", nil
}

func checkGeometry(size, chunk int64) error {
	switch {
	case chunk < 4096 || chunk&(chunk-1) != 0 || chunk > 1<<30:
		return fmt.Errorf("chunk size %d is not a power of two from 4096 to 1 GiB", chunk)
	case size <= 0 || size%512 != 0 || size > maxSize:
		return fmt.Errorf("size %d is not a positive multiple of 512 up to 2^60", size)
	}
	return nil
}

// CreateOn is Create over devices the caller opened (tests use crash
// devices); image must be zero in [0, size). The caller closes them after
// Close.
func CreateOn(image, journal Dev, size, chunk int64, opt Options) (*Image, error) {
	if err := checkGeometry(size, chunk); err != nil {
		return nil, err
	}
	h := header{
		Size: size, Chunk: chunk, JournalID: rand.Uint64() | 1,
		End: dataStart, Created: time.Now().UnixNano(),
	}
	im := newImage(image, journal, h, opt)
	// Both slots, so that a torn write of either later finds the other.
	for range 2 {
		if err := im.writeHeader(im.h); err != nil {
			return nil, err
		}
	}
	return im, nil
}

func newImage(image, journal Dev, h header, opt Options) *Image {
	seg := opt.SegmentBytes
	if seg <= 0 {
		seg = 4 << 20
	}
	cache := opt.ApplyCache
	if cache == 0 {
		cache = 64 << 20
	}
	return &Image{image: image, journal: journal, h: h, size: h.Size, chunk: h.Chunk, seg: roundUp(seg, align), cache: cache, names: [2]string{"image", "journal"}}
}

// Open opens the image at path and its journal. If a checkpoint was
// committed but not (fully) copied into the image, Open checks it whole
// and applies it, so that ReadAt, and any reader of the raw file, sees
// the newest complete checkpoint.
func Open(path string, opt Options) (*Image, error) {
	jpath, err := journalPath(path, opt)
	if err != nil {
		return nil, err
	}
	img, err := openFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint image: %w", err)
	}
	j, err := openFile(jpath, false)
	if err != nil {
		img.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open checkpoint image %s: its journal is missing: %w (give its path in the journal option if it lives elsewhere)", path, err)
		}
		return nil, fmt.Errorf("open checkpoint image %s: %w", path, err)
	}
	im, err := openOn(img, j, opt, [2]string{path, jpath})
	if err != nil {
		img.Close()
		j.Close()
		return nil, err
	}
	im.closers = []func() error{img.Close, j.Close}
	return im, nil
}

// OpenOn is Open over devices the caller opened.
func OpenOn(image, journal Dev, opt Options) (*Image, error) {
	return openOn(image, journal, opt, [2]string{"image", "journal"})
}

func openOn(image, journal Dev, opt Options, names [2]string) (*Image, error) {
	h, _, err := readHeader(journal, names[1])
	if err != nil {
		return nil, err
	}
	if got := image.Size(); got < h.Size {
		return nil, fmt.Errorf("%w: image %s is %d bytes, its journal %s describes %d: the image was truncated or the journal belongs to another image",
			ErrCorrupt, names[0], got, names[1], h.Size)
	}
	im := newImage(image, journal, h, opt)
	im.names = names
	if h.Committed > h.Applied {
		if im.h, err = im.replay(h, nil); err != nil {
			return nil, fmt.Errorf("open checkpoint image %s: %w", names[0], err)
		}
	}
	return im, nil
}

// slot is one header slot as found, for Open and Inspect.
type slot struct {
	h   header
	err error
}

// readHeader reads both slots and returns the valid one of the higher
// generation.
func readHeader(journal Dev, name string) (header, [2]slot, error) {
	var slots [2]slot
	buf := alignedBuf(dataStart)
	if err := readFull(journal, buf, 0); err != nil {
		if journal.Size() < dataStart {
			return header{}, slots, fmt.Errorf("%w: %s is %d bytes, shorter than the %d-byte header: it is truncated, or not a checkpoint journal",
				ErrCorrupt, name, journal.Size(), dataStart)
		}
		return header{}, slots, fmt.Errorf("read checkpoint journal %s: %w", name, err)
	}
	best := -1
	for i := range slots {
		slots[i].h, slots[i].err = decodeHeader(buf[i*slotSize : (i+1)*slotSize])
		if slots[i].err == nil && (best < 0 || slots[i].h.Gen > slots[best].h.Gen) {
			best = i
		}
	}
	if best < 0 {
		if errors.Is(slots[0].err, errNoMagic) && errors.Is(slots[1].err, errNoMagic) {
			return header{}, slots, fmt.Errorf("%w: %s is not a checkpoint journal (%v)", ErrCorrupt, name, errNoMagic)
		}
		return header{}, slots, fmt.Errorf("%w: %s: both header slots are bad (slot 0: %v; slot 1: %v): the journal cannot say which checkpoint the image holds; restore the image and journal from a backup, or start a new image",
			ErrCorrupt, name, slots[0].err, slots[1].err)
	}
	o := slots[1-best]
	if o.err == nil && o.h.JournalID != slots[best].h.JournalID {
		return header{}, slots, fmt.Errorf("%w: %s: the header slots belong to different journals (ids %#x and %#x)", ErrCorrupt, name, slots[0].h.JournalID, slots[1].h.JournalID)
	}
	return slots[best].h, slots, nil
}

// writeHeader writes h as the generation after im.h into the older slot
// and makes it durable; im.h becomes it. The caller holds im.mu, or owns
// the Image (Create, Open).
func (im *Image) writeHeader(h header) error {
	h, err := im.putHeader(im.h, h)
	if err == nil {
		im.h = h
	}
	return err
}

// putHeader writes h as the generation after cur (the header on the
// media) into the older slot, makes it durable, and returns it as
// written.
func (im *Image) putHeader(cur, h header) (header, error) {
	h.Gen = cur.Gen + 1
	buf := alignedBuf(slotSize)
	h.encode(buf)
	if err := writeFull(im.journal, buf, int64(h.Gen%2)*slotSize); err != nil {
		return h, fmt.Errorf("write header of %s: %w", im.names[1], err)
	}
	if err := im.journal.Flush(); err != nil {
		return h, fmt.Errorf("flush %s: %w", im.names[1], err)
	}
	return h, nil
}

// Size is the image size in bytes.
func (im *Image) Size() int64 { return im.size }

// Chunk is the chunk size in bytes.
func (im *Image) Chunk() int64 { return im.chunk }

// Last is the newest complete checkpoint (Seq 0: none yet).
func (im *Image) Last() Checkpoint {
	im.mu.RLock()
	defer im.mu.RUnlock()
	return im.h.last()
}

func (h header) last() Checkpoint {
	if h.Committed == 0 {
		return Checkpoint{}
	}
	return Checkpoint{Seq: h.Committed, Time: time.Unix(0, h.Time), Bytes: h.Bytes, Chunks: h.Chunks}
}

// ReadAt reads the contents of Last() (zeroes before the first
// checkpoint), waiting for a background apply to end first. It fails with
// ErrNotApplied while a committed checkpoint could not be applied to the
// image.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	im.mu.RLock()
	defer im.mu.RUnlock()
	for im.applying != nil {
		ch := im.applying
		im.mu.RUnlock()
		<-ch
		im.mu.RLock()
	}
	if im.closed {
		return 0, ErrClosed
	}
	if im.unappl != nil {
		return 0, im.unappl
	}
	if off < 0 || off > im.h.Size {
		return 0, fmt.Errorf("read at %d outside the %d-byte image", off, im.h.Size)
	}
	n := min(int64(len(p)), im.h.Size-off)
	if im.h.Committed == 0 {
		clear(p[:n]) // no checkpoint yet (an interrupted first one may be in the file)
	} else if err := readFull(im.image, p[:n], off); err != nil {
		return 0, fmt.Errorf("read %s: %w", im.names[0], err)
	}
	if n < int64(len(p)) {
		return int(n), errEOF
	}
	return int(n), nil
}

// Direct reports whether image and journal writes bypass the page cache
// (O_DIRECT), and if not why. Images over caller-given devices say no.
func (im *Image) Direct() (bool, string) {
	type directer interface{ Direct() (bool, string) }
	for i, d := range []Dev{im.image, im.journal} {
		f, ok := d.(directer)
		if !ok {
			return false, "not a file"
		}
		if ok, why := f.Direct(); !ok {
			return false, im.names[i] + ": " + why
		}
	}
	return true, ""
}

// Close aborts an open Txn, waits for a background apply to end, and
// closes the files Create or Open opened. A checkpoint whose apply failed
// stays durable in the journal; the next Open applies it.
func (im *Image) Close() error {
	im.mu.Lock()
	if im.closed {
		im.mu.Unlock()
		return nil
	}
	im.closed = true
	txn, ch := im.txn, im.applying
	im.txn = nil
	im.mu.Unlock()
	if txn != nil {
		txn.wg.Wait()
	}
	if ch != nil {
		<-ch
	}
	var errs []error
	for _, c := range im.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
