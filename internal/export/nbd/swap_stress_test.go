package nbd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
)

// TestStress_tableSwaps runs the stress clients against a real mapped
// device while its table is reloaded, and the device suspended and
// resumed, hundreds of times: requests that arrive while it is suspended
// must wait, not fail; none is lost or answered twice (the clients check
// cookies and every private read against their models); at the end the
// backing bytes equal what the clients' models say.
func TestStress_tableSwaps(t *testing.T) {
	const size = stressShared + stressConns*stressPrivate
	const sectors = size / 512
	ops := 800
	if testing.Short() {
		ops = 200
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	mem := backingtest.NewMem("/dev/shm/disk", size, backing.DAX|backing.WPFault)
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(backingtest.Opener(mem)))
	// Three tables that map the same bytes differently.
	tables := []string{
		fmt.Sprintf("0 %d linear /dev/shm/disk 0", sectors),
		fmt.Sprintf("0 1000 linear /dev/shm/disk 0\n1000 %d linear /dev/shm/disk 1000", sectors-1000),
		fmt.Sprintf("0 8 linear /dev/shm/disk 0\n8 %d striped 1 8 /dev/shm/disk 8", sectors-8),
	}
	dev, err := m.Create("disk", dm.CreateOptions{Table: tables[0]})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, newExports().add(Export{Name: "disk", Backend: dev}), Options{MaxInFlight: 4 << 20})

	stop := make(chan struct{})
	swaps := make(chan int, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, 1000))
		n := 0
		defer func() { swaps <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := dev.Load(tables[rng.IntN(len(tables))]); err != nil {
				t.Error(err)
				return
			}
			if rng.IntN(3) == 0 {
				if err := dev.Suspend(dm.SuspendOptions{}); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
			}
			if err := dev.Resume(); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	var wg sync.WaitGroup
	models := make([][]byte, stressConns)
	for i := range stressConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, addr := "tcp", ts.tcp
			if i%2 == 1 {
				network, addr = "unix", ts.unix
			}
			c := connect(t, network, addr, "disk", connectOpts{structured: i%4 < 2})
			_, models[i] = runStressClient(t, c, i, ops, rand.New(rand.NewPCG(seed, uint64(i))))
		}()
	}
	wg.Wait()
	close(stop)
	if n := <-swaps; n < 20 {
		t.Fatalf("only %d table swaps happened during the run: the test proved little", n)
	}
	// No write was lost in a swap: every private region on the backing
	// device equals its client's model.
	for i, model := range models {
		base := stressShared + i*stressPrivate
		if bytes.Equal(model, make([]byte, stressPrivate)) {
			t.Fatalf("connection %d wrote nothing to its private region", i)
		}
		if !bytes.Equal(mem.Bytes()[base:base+stressPrivate], model) {
			t.Fatalf("connection %d: private region on the backing device differs from its model", i)
		}
	}
}
