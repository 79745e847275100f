package checkpoint_test

import (
	"errors"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint"
)

// TestClose_hungWrite checks that Close does not wait forever for a
// checkpoint whose write to the image hangs (a hung disk): past its
// bound it returns ErrHung, and once the write returns the checkpoint is
// given up at its next chunk, failing its request with ErrClosed, and
// the image keeps the last complete checkpoint. Close waited for the
// write-back to end, which held the daemon's stop.
func TestClose_hungWrite(t *testing.T) {
	defer checkpoint.SetCloseWait(0)()
	r, p, v := pausable(t, checkpoint.Config{Interval: time.Hour})
	r.write(0, fill(8192, 1))
	p.at.Store(1)
	res := goCheckpoint(v)
	<-p.paused // the write-back hangs in its first chunk
	closed := make(chan error, 1)
	go func() { closed <- v.Close() }()
	select {
	case err := <-closed:
		if !errors.Is(err, checkpoint.ErrHung) {
			t.Fatalf("Close while a write to the image hangs = %v, want ErrHung", err)
		}
	case <-time.After(time.Minute):
		p.resume <- struct{}{}
		t.Fatal("Close did not return in a minute while a write to the image hung")
	}
	p.resume <- struct{}{} // the write returns
	select {
	case got := <-res:
		if !errors.Is(got.err, checkpoint.ErrClosed) {
			t.Fatalf("the checkpoint given up by Close: %+v, want ErrClosed", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("the checkpoint under way did not end in a minute after its write returned")
	}
	if last := r.im.Last().Seq; last != 0 {
		t.Fatalf("after a checkpoint given up the image is at checkpoint %d, want none", last)
	}
}
