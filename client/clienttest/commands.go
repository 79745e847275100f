package clienttest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/daxsnap/daxsnap/client"
)

// child is the client process's state between commands.
type child struct {
	ctx context.Context
	c   *client.Client
	m   *client.Mapping
	// mapped is the length of m, as mapped.
	mapped int64

	// A background writer (stream, causal, ...) runs until stop; done
	// closes when it has, and last is what it answers.
	stop atomic.Bool
	last atomic.Uint64
	done chan struct{}
	// loop runs until halt, then sends its answer on looped.
	halt   atomic.Bool
	looped chan string
}

// command is one line of the protocol.
type command struct {
	usage string // name and arguments, as the line carries them
	doc   string
	// mapped says the command needs a mapping (map first).
	mapped bool
	// run does it and returns the answer after "ok" (an error answers
	// "err ..."); the arguments are checked against usage already.
	run func(ch *child, a args) (string, error)
}

// args are a command line's arguments.
type args []string

// int is argument i as a number (0 if it is none).
func (a args) int(i int) int64 { v, _ := strconv.ParseInt(a[i], 10, 64); return v }

// errQuit ends Main after its answer.
var errQuit = errors.New("quit")

// commands is the protocol, by name.
var commands = map[string]command{
	"map": {usage: "map DEVICE OFF LEN rw|ro", doc: "map a range",
		run: func(ch *child, a args) (string, error) {
			m, err := ch.c.Map(ch.ctx, a[0], client.MapOptions{Offset: a.int(1), Length: a.int(2), Write: a[3] == "rw"})
			if ce, ok := err.(*client.Error); ok {
				return "", fmt.Errorf("%v (code %s)", err, ce.Code)
			} else if err != nil {
				return "", err
			}
			ch.m, ch.mapped = m, a.int(2)
			return "", nil
		}},
	"fill": {usage: "fill SEED", doc: "every word of page p := SEED<<32 | p", mapped: true,
		run: func(ch *child, a args) (string, error) {
			fill(ch.m.Bytes(), uint64(a.int(0)))
			return "", nil
		}},
	"check": {usage: "check SEED", doc: "load every word; answers how many pages differ from what fill SEED writes", mapped: true,
		run: func(ch *child, a args) (string, error) {
			mem, seed := ch.m.Bytes(), uint64(a.int(0))
			bad := 0
			for p := 0; p < len(mem)/pageSize; p++ {
				for off := p * pageSize; off < (p+1)*pageSize; off += 8 {
					if binary.LittleEndian.Uint64(mem[off:]) != seed<<32|uint64(p) {
						bad++
						break
					}
				}
			}
			return fmt.Sprint(bad), nil
		}},
	"stream": {usage: "stream", doc: "write seq+1 to page seq%P, seq = 0, 1, ..., until stop", mapped: true,
		run: func(ch *child, _ args) (string, error) {
			mem := ch.m.Bytes()
			pages := uint64(len(mem) / pageSize)
			ch.background(func(stop *atomic.Bool) uint64 {
				var seq uint64
				for ; !stop.Load(); seq++ {
					store(mem, seq%pages, seq+1)
				}
				return seq
			})
			return "", nil
		}},
	"causal": {usage: "causal W N", doc: "writer W of N appends causal records until stop (causal.go)", mapped: true,
		run: func(ch *child, a args) (string, error) {
			mem, w, n := ch.m.Bytes(), int(a.int(0)), int(a.int(1))
			ch.background(func(stop *atomic.Bool) uint64 { return writeCausal(mem, w, n, stop) })
			return "", nil
		}},
	"access-causal": {usage: "access-causal W N", doc: "causal's records, 16 per Mapping.Access (which maps again after a recall), until stop", mapped: true,
		run: func(ch *child, a args) (string, error) {
			m, w, n := ch.m, int(a.int(0)), int(a.int(1))
			ch.background(func(stop *atomic.Bool) uint64 { return accessCausal(ch.ctx, m, w, n, stop) })
			return "", nil
		}},
	"access-stream": {usage: "access-stream", doc: "stream's stores, 64 per Mapping.Access, until stop", mapped: true,
		run: func(ch *child, _ args) (string, error) {
			m := ch.m
			ch.background(func(stop *atomic.Bool) uint64 {
				var seq uint64
				for !stop.Load() {
					err := m.Access(ch.ctx, func(mem []byte) error {
						pages := uint64(len(mem) / pageSize)
						for range 64 {
							store(mem, seq%pages, seq+1)
							seq++
						}
						return nil
					})
					if err != nil {
						fmt.Fprintln(os.Stderr, "access-stream:", err)
						break
					}
				}
				return seq
			})
			return "", nil
		}},
	"stop": {usage: "stop", doc: "stop the background writer; answers the last sequence number (writes done)",
		run: func(ch *child, _ args) (string, error) {
			if ch.done == nil {
				return "", errors.New("stop: nothing runs: start stream, causal, access-causal or access-stream first")
			}
			ch.stop.Store(true)
			<-ch.done
			ch.done = nil
			return fmt.Sprint(ch.last.Load()), nil
		}},
	"timed": {usage: "timed STRIDE", doc: `one store every STRIDE bytes, each timed; answers "N P50 P99 MAX SUM" (nanoseconds)`, mapped: true,
		run: func(ch *child, a args) (string, error) {
			mem, stride := ch.m.Bytes(), int(a.int(0))
			var lat []time.Duration
			for off := 0; off < len(mem); off += stride {
				t0 := time.Now()
				mem[off]++
				lat = append(lat, time.Since(t0))
			}
			return timings(lat), nil
		}},
	"loop": {usage: "loop STRIDE", doc: "the stores of timed, pass after pass, until halt", mapped: true,
		run: func(ch *child, a args) (string, error) {
			mem, stride := ch.m.Bytes(), int(a.int(0))
			ch.halt.Store(false)
			looped := make(chan string, 1)
			ch.looped = looped
			go func() {
				var lat []time.Duration
				for off := 0; !ch.halt.Load(); off = (off + stride) % len(mem) {
					t0 := time.Now()
					mem[off]++
					lat = append(lat, time.Since(t0)) // before halt is seen: a held store counts
				}
				looped <- timings(lat)
			}()
			return "", nil
		}},
	"halt": {usage: "halt", doc: "stop looping; answers as timed does, over every store",
		run: func(ch *child, _ args) (string, error) {
			if ch.looped == nil {
				return "", errors.New("halt: no loop running")
			}
			ch.halt.Store(true)
			ans := <-ch.looped
			ch.looped = nil
			return ans, nil
		}},
	"access-fill": {usage: "access-fill SEED", doc: "fill through Mapping.Access (which maps again after a recall)", mapped: true,
		run: func(ch *child, a args) (string, error) {
			seed := uint64(a.int(0))
			return "", ch.m.Access(ch.ctx, func(mem []byte) error { fill(mem, seed); return nil })
		}},
	"persist": {usage: "persist", doc: `Mapping.Persist of the whole mapping; answers its durability ("ok DURABILITY")`, mapped: true,
		run: func(ch *child, _ args) (string, error) {
			if err := ch.m.Persist(0, int(ch.mapped)); err != nil {
				return "", err
			}
			return ch.m.Durability(), nil
		}},
	"access-hold": {usage: "access-hold MS", doc: "hold an Access for MS milliseconds, in the background; answers once it holds", mapped: true,
		run: func(ch *child, a args) (string, error) {
			d := time.Duration(a.int(0)) * time.Millisecond
			held := make(chan struct{})
			go ch.m.Access(ch.ctx, func([]byte) error { close(held); time.Sleep(d); return nil })
			<-held
			return "", nil
		}},
	"recalled": {usage: "recalled", doc: "whether the daemon took the mapping back", mapped: true,
		run: func(ch *child, _ args) (string, error) { return fmt.Sprint(ch.m.Recalled()), nil }},
	"peek": {usage: "peek OFF", doc: "load the byte at OFF; answers it", mapped: true,
		run: func(ch *child, a args) (string, error) { return fmt.Sprint(ch.m.Bytes()[a.int(0)]), nil }},
	"poke": {usage: "poke OFF", doc: "store 0xa5 at OFF; answers once the store completed", mapped: true,
		run: func(ch *child, a args) (string, error) {
			ch.m.Bytes()[a.int(0)] = 0xa5
			return "", nil
		}},
	"segv": {usage: "segv OFF", doc: "store with SIGSEGV at its default action", mapped: true,
		run: func(ch *child, a args) (string, error) {
			defaultSEGV()
			ch.m.Bytes()[a.int(0)] = 1
			return "stored", nil
		}},
	"fork": {usage: "fork OFF", doc: "a forked child probes OFF; answers how it ended", mapped: true,
		run: func(ch *child, a args) (string, error) { return forkTouch(ch.m.Bytes()[a.int(0):]), nil }},
	"unmap": {usage: "unmap", doc: "close the mapping", mapped: true,
		run: func(ch *child, _ args) (string, error) { return "", ch.m.Close() }},
	"quit": {usage: "quit", doc: "close the session and exit",
		run: func(ch *child, _ args) (string, error) { return "", errQuit }},
}

// Main runs the client side: it dials the socket Start gave and serves
// commands on stdin until "quit" or end of input; it returns the exit status.
func Main() int {
	// No garbage collection in the child: a store blocked on a protected
	// page that the Go runtime cannot preempt (runtime.memmove, or an
	// atomic store under -race, which runs in the race runtime) blocks a
	// GC's stop-the-world, and while no daemon runs (the tests kill it)
	// nothing resolves that fault, because the library's reconnection is
	// stopped too: the child hangs for good. docs/dax.md ("Daemon
	// restarts") describes this limitation of Go programs; the tests that
	// kill the daemon under writers hit it about once in a few CI runs.
	debug.SetGCPercent(-1)
	ctx := context.Background()
	c, err := client.Dial(ctx, os.Getenv(childEnv))
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	ch := &child{ctx: ctx, c: c}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		ans, err := ch.do(f[0], f[1:])
		switch {
		case errors.Is(err, errQuit):
			fmt.Println("ok")
			c.Close()
			return 0
		case err != nil:
			fmt.Println("err", err)
		case ans == "":
			fmt.Println("ok")
		default:
			fmt.Println("ok", ans)
		}
	}
	return 0
}

// do runs one command line.
func (ch *child) do(name string, a args) (string, error) {
	cmd, ok := commands[name]
	if !ok {
		return "", fmt.Errorf("unknown command %s", name)
	}
	if want := len(strings.Fields(cmd.usage)) - 1; len(a) != want {
		return "", fmt.Errorf("%s takes %d arguments, got %d: usage: %s", name, want, len(a), cmd.usage)
	}
	if cmd.mapped && ch.m == nil {
		return "", fmt.Errorf("%s: nothing is mapped: map a range first", name)
	}
	return cmd.run(ch, a)
}

// background runs fn, a writer that stores until stop, for stop to end.
func (ch *child) background(fn func(stop *atomic.Bool) (last uint64)) {
	ch.stop.Store(false)
	done := make(chan struct{})
	ch.done = done
	go func() {
		defer close(done)
		ch.last.Store(fn(&ch.stop))
	}()
}

// fill makes every word of page p of mem seed<<32 | p.
func fill(mem []byte, seed uint64) {
	for off := 0; off < len(mem); off += 8 {
		binary.LittleEndian.PutUint64(mem[off:], seed<<32|uint64(off/pageSize))
	}
}

// store writes v to the first word of page p of mem in one 8-byte store,
// also under -race (where PutUint64 becomes eight byte stores a cut can
// split).
func store(mem []byte, p, v uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[p*pageSize])), v)
}
