package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/daxsnap/daxsnap/client"
)

// Map a volume, store to it directly and make the stores durable. The
// daemon (daxsnap serve --state /var/lib/daxsnap) must be running with a
// DAX-capable device "vol" (a linear map of a memory region, say).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "/var/lib/daxsnap/dax.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.Map(ctx, "vol", client.MapOptions{Length: 1 << 20, Write: true})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	n := copy(m.Bytes(), "hello, DAX")
	if err := m.Persist(0, n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Durability())
}

// Use a mapping through Access when the volume's table may change while
// the program runs (a table reload, a removal, an offline merge): the
// daemon can then recall the mapping, and Access maps it again.
func ExampleMapping_Access() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "/var/lib/daxsnap/dax.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.Map(ctx, "vol", client.MapOptions{Length: 1 << 20, Write: true})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	for i := 0; i < 3; i++ {
		err := m.Access(ctx, func(mem []byte) error {
			mem[i] = byte(i) // a recall waits until this function returns
			return nil
		})
		if err != nil {
			log.Fatal(err)
		}
	}
}

// Tell why the daemon refused a request with errors.Is: a busy device is
// worth asking again later, a missing one is not.
func ExampleError() {
	socket, stop := stoppingDaemon() // a stand-in: a stopping daemon refuses every map as busy
	defer stop()

	ctx := context.Background()
	c, err := client.Dial(ctx, socket)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Map(ctx, "vol", client.MapOptions{Length: 1 << 20})
	switch {
	case errors.Is(err, client.ErrBusy):
		fmt.Println("busy: ask again later")
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("no such volume")
	case err != nil:
		fmt.Println("refused:", err)
	}
	// Output: busy: ask again later
}
