// Command nbdserve serves one in-memory or file-backed export with
// internal/export/nbd, for bench/nbd.sh until `daxsnap serve` exists.
//
//	nbdserve -listen unix:/tmp/nbd.sock -size 1G           # memory
//	nbdserve -listen 127.0.0.1:10809 -file /dev/shm/disk   # a (tmpfs) file
//
// It runs until SIGINT or SIGTERM, then shuts the server down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/daxsnap/daxsnap/internal/export/nbd"
)

func main() {
	listen := flag.String("listen", "unix:/tmp/nbdserve.sock", "address: unix:PATH or HOST:PORT")
	size := flag.String("size", "1G", "size of the memory export (K, M, G suffixes)")
	file := flag.String("file", "", "serve this file instead of memory (created with -size if missing)")
	name := flag.String("name", "", "export name")
	debug := flag.Bool("debug", false, "log protocol events")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file until shutdown")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "nbdserve:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*listen, *size, *file, *name, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "nbdserve:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(listen, sizeArg, file, name string, debug bool) error {
	size, err := parseSize(sizeArg)
	if err != nil {
		return err
	}
	var be nbd.Backend
	if file != "" {
		fb, err := openFile(file, size)
		if err != nil {
			return err
		}
		defer fb.f.Close()
		be = fb
	} else {
		be = &memory{data: make([]byte, size)}
	}
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv := nbd.NewServer(single{name: name, be: be}, nbd.Options{Logger: log})

	network, addr := "tcp", listen
	if p, ok := strings.CutPrefix(listen, "unix:"); ok {
		network, addr = "unix", p
		_ = os.Remove(p)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Info("serving", "listen", listen, "size", size, "file", file)
	if err := srv.Serve(l); !errors.Is(err, nbd.ErrServerClosed) {
		return err
	}
	return nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseInt(strings.TrimRight(s, "KMG"), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad -size %q: want a positive number with an optional K, M or G suffix", s)
	}
	return n * mult, nil
}

// single is an Exports with one export, answering to any name.
type single struct {
	name string
	be   nbd.Backend
}

func (s single) Open(*nbd.Client, string) (*nbd.Export, error) {
	return &nbd.Export{Name: s.name, Description: "nbdserve", Backend: s.be}, nil
}

func (s single) List(*nbd.Client) []nbd.ExportInfo {
	return []nbd.ExportInfo{{Name: s.name, Description: "nbdserve"}}
}

// memory is a byte slice; writes exclude reads, like nbdkit's memory plugin.
type memory struct {
	mu   sync.RWMutex
	data []byte
}

func (m *memory) Size() int64 { return int64(len(m.data)) }

func (m *memory) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, io.ErrUnexpectedEOF
	}
	return copy(p, m.data[off:]), nil
}

func (m *memory) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, io.ErrShortWrite
	}
	return copy(m.data[off:], p), nil
}

func (m *memory) Flush() error               { return nil }
func (m *memory) Discard(off, n int64) error { return m.WriteZeroes(off, n) }
func (m *memory) FastZero() bool             { return true }
func (m *memory) WriteZeroes(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

// fileBackend serves a file with pread/pwrite, punches holes for
// discard and zeroes, and reports holes with SEEK_DATA/SEEK_HOLE.
type fileBackend struct {
	f    *os.File
	size int64
	seek sync.Mutex // Seek moves the shared file offset
}

func openFile(path string, size int64) (*fileBackend, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() == 0 {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, err
		}
	} else {
		size = st.Size()
	}
	return &fileBackend{f: f, size: size}, nil
}

const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	seekData        = 3
	seekHole        = 4
)

func (b *fileBackend) Size() int64                              { return b.size }
func (b *fileBackend) ReadAt(p []byte, off int64) (int, error)  { return b.f.ReadAt(p, off) }
func (b *fileBackend) WriteAt(p []byte, off int64) (int, error) { return b.f.WriteAt(p, off) }
func (b *fileBackend) Flush() error                             { return b.f.Sync() }
func (b *fileBackend) Discard(off, n int64) error               { return b.punch(off, n) }
func (b *fileBackend) WriteZeroes(off, n int64) error           { return b.punch(off, n) }
func (b *fileBackend) FastZero() bool                           { return true }

func (b *fileBackend) punch(off, n int64) error {
	return syscall.Fallocate(int(b.f.Fd()), fallocPunchHole|fallocKeepSize, off, n)
}

func (b *fileBackend) Extents(off, n int64) ([]nbd.Extent, error) {
	b.seek.Lock()
	defer b.seek.Unlock()
	end := off + n
	var out []nbd.Extent
	for pos := off; pos < end; {
		data, err := b.f.Seek(pos, seekData)
		if errors.Is(err, syscall.ENXIO) || err == nil && data >= end { // no data before end
			return append(out, nbd.Extent{Length: end - pos, Hole: true, Zero: true}), nil
		}
		if err != nil {
			return nil, err
		}
		if data > pos {
			out = append(out, nbd.Extent{Length: data - pos, Hole: true, Zero: true})
		}
		hole, err := b.f.Seek(data, seekHole)
		if err != nil {
			return nil, err
		}
		hole = min(hole, end)
		out = append(out, nbd.Extent{Length: hole - data})
		pos = hole
	}
	return out, nil
}
