package daemon_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that verbs on several devices, block I/O through them and
// readers of the whole state can run at once without losing data or
// deadlocking, and that the records afterwards match the devices.
func TestDaemon_concurrentVerbsAndIO(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", 4*mib)
	const devices, rounds = 4, 15
	tables := make([]string, devices)
	for i := range devices {
		tables[i] = fmt.Sprintf("0 2048 linear %s %d", path, i*2048)
		e.create(fmt.Sprintf("d%d", i), tables[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*devices+1)
	for i := range devices {
		name := fmt.Sprintf("d%d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range rounds {
				for _, err := range []error{e.c.Load(bg, name, wire.Load{Table: tables[i]}),
					e.c.Suspend(bg, name, wire.Suspend{}), e.c.Resume(bg, name)} {
					if err != nil {
						errs <- fmt.Errorf("%s verbs: %w", name, err)
						return
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			for r := range rounds {
				data := bytes.Repeat([]byte{byte(i*rounds + r)}, 4096)
				if err := e.c.WriteData(bg, name, int64(r)*4096, data); err != nil {
					errs <- fmt.Errorf("%s write: %w", name, err)
					return
				}
				got, err := e.c.ReadData(bg, name, int64(r)*4096, 4096)
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("%s read back round %d: %v", name, r, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range rounds {
			if _, err := e.c.Devices(bg); err != nil {
				errs <- err
			}
			if _, err := e.c.PmemList(bg); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.restart()
	for i := range devices {
		name := fmt.Sprintf("d%d", i)
		if got := e.table(name, false); got != tables[i]+"\n" {
			t.Errorf("%s table after restart = %q", name, got)
		}
		if in := e.info(name); in.Suspended || in.InactiveTable {
			t.Errorf("%s after restart: %+v", name, in)
		}
		got, err := e.c.ReadData(bg, name, int64(rounds-1)*4096, 4096)
		if err != nil || got[0] != byte(i*rounds+rounds-1) {
			t.Errorf("%s data after restart: %v", name, err)
		}
	}
}
