// Command daxmap maps a daxsnap volume with the client library, prints its
// first bytes, and optionally stores a string at an offset and persists it.
//
//	daxsnap serve --state /tmp/dx &
//	daxsnap pmem create mem --size 64MiB          # a memory region
//	daxsnap create vol --table "0 131072 linear /dev/shm/daxsnap/mem 0"
//	go run ./examples/daxmap -socket /tmp/dx/dax.sock -device vol -write "hello" -at 0
//	daxsnap snapshot create vol s1                # the mapping keeps working
//
// Stores go straight to the volume's memory: no daemon in the data path,
// except one copy-on-write fault per chunk after a snapshot.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/daxsnap/daxsnap/client"
)

func main() {
	socket := flag.String("socket", "/run/daxsnap/dax.sock", "the daemon's session socket (RUNTIME-DIR/dax.sock: /run/daxsnap for root's daemon, else its --state directory)")
	device := flag.String("device", "", "volume to map")
	offset := flag.Int64("offset", 0, "first byte of the mapping (page-aligned)")
	length := flag.Int64("length", 1<<20, "bytes to map (page-aligned)")
	write := flag.String("write", "", "string to store")
	at := flag.Int("at", 0, "offset in the mapping to store it at")
	sync := flag.Bool("require-sync", false, "fail unless the volume is on sync (MAP_SYNC) media")
	flag.Parse()
	if *device == "" {
		fmt.Fprintln(os.Stderr, "daxmap: give -device")
		os.Exit(2)
	}
	if err := run(*socket, *device, *offset, *length, *write, *at, *sync); err != nil {
		fmt.Fprintln(os.Stderr, "daxmap:", err)
		os.Exit(1)
	}
}

func run(socket, device string, offset, length int64, write string, at int, requireSync bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := c.Map(ctx, device, client.MapOptions{Offset: offset, Length: length, Write: write != "", RequireSync: requireSync})
	if err != nil {
		return err
	}
	defer m.Close()
	mem := m.Bytes()
	if write != "" {
		if at < 0 || at+len(write) > len(mem) {
			return fmt.Errorf("-at %d: %d bytes do not fit the %d-byte mapping", at, len(write), len(mem))
		}
		copy(mem[at:], write)
		if err := m.Persist(at, len(write)); err != nil {
			return err
		}
	}
	fmt.Printf("%s [%d, +%d): %q\n%s\n", device, offset, length, mem[:min(64, len(mem))], m.Durability())
	return nil
}
