package targettest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// checkStatus checks the status text and that StatusTable's arguments
// build the same target again: same text, same device ranges.
func checkStatus(tb TB, c Case) {
	tb.Helper()
	c.validate(tb)
	r := newRig(c.Devices, 1)
	t1, ctx1 := openTarget(tb, c, r, c.Args, c.Len)
	table, info := t1.Status(dm.StatusTable), t1.Status(dm.StatusInfo)
	if table != c.Table {
		tb.Errorf("StatusTable = %q, want %q", table, c.Table)
	}
	if info != c.Info {
		tb.Errorf("StatusInfo = %q, want %q", info, c.Info)
	}
	t2, ctx2 := openTarget(tb, c, r, strings.Fields(table), c.Len)
	if again := t2.Status(dm.StatusTable); again != table {
		tb.Errorf("built from its own table %q, the target prints %q", table, again)
	}
	if a, b := describe(ctx1.Devices()), describe(ctx2.Devices()); a != b {
		tb.Errorf("built from its own table %q, the target uses devices %s, not %s", table, b, a)
	}
	closeTarget(tb, r, t2, ctx2)
	closeTarget(tb, r, t1, ctx1)
	r.released(tb)
}

func describe(refs []*dm.DeviceRef) string {
	var parts []string
	for _, d := range refs {
		parts = append(parts, fmt.Sprintf("%s[%d+%d]", d.Name, d.Start, d.Len))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// checkCtorErrors checks each listed refusal: the reason, no type prefix
// (the core adds it), and no device left open.
func checkCtorErrors(tb TB, c Case) {
	tb.Helper()
	c.validate(tb)
	for _, ce := range c.CtorErrors {
		length := ce.Len
		if length == 0 {
			length = c.Len
		}
		r := newRig(c.Devices, 1)
		ctx := dm.NewCtorContext(r.pool, "targettest", 0, length, dm.ReadWrite)
		t, err, _ := construct(c.Type, ctx, ce.Args)
		switch {
		case err == nil:
			tb.Errorf("%s: %s %q (length %d) was accepted, want an error containing %q", ce.Name, c.Type.Name, ce.Args, length, ce.Want)
			closeTarget(tb, r, t, ctx)
		case !strings.Contains(err.Error(), ce.Want):
			tb.Errorf("%s: %s %q (length %d): error %q does not contain %q", ce.Name, c.Type.Name, ce.Args, length, err, ce.Want)
		case strings.HasPrefix(err.Error(), c.Type.Name+":"):
			tb.Errorf("%s: error %q starts with the type name; return only the reason, the core adds line and type", ce.Name, err)
		}
		ctx.Release()
		r.released(tb)
	}
}

// checkRandomArgs feeds constructors mutations of the Case's arguments and
// random token lists: never a panic, never a leak, and whatever is
// accepted must build again from its own StatusTable.
func checkRandomArgs(tb TB, c Case) {
	tb.Helper()
	c.validate(tb)
	vocab := []string{"0", "1", "2", "3", "7", "8", "16", "24", "-1", "+1", "x", "0x10", "", "08", "1.5",
		"18014398509481983", "18014398509481984", "18446744073709551616", "4294967296", "no-such-device"}
	for _, d := range c.Devices {
		vocab = append(vocab, d.Name, d.Name)
	}
	vocab = append(vocab, c.Args...)
	token := rapid.SampledFrom(vocab)
	lengths := []dm.Sector{c.Len, c.Len + 1, c.Len * 2, 1, 8, 24, 96}
	if c.Len > 1 {
		lengths = append(lengths, c.Len/2, c.Len-1)
	}
	rapid.Check(tb, func(t *rapid.T) {
		args := drawArgs(t, c.Args, token)
		length := rapid.SampledFrom(lengths).Draw(t, "length")
		r := newRig(c.Devices, 1)
		ctx := dm.NewCtorContext(r.pool, "targettest", 0, length, dm.ReadWrite)
		tgt, err, panicked := construct(c.Type, ctx, args)
		if panicked {
			t.Fatalf("%s %q (length %d): %v", c.Type.Name, args, length, err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("%s %q (length %d): error with empty text", c.Type.Name, args, length)
			}
			ctx.Release()
			r.released(t)
			return
		}
		table := tgt.Status(dm.StatusTable)
		ctx2 := dm.NewCtorContext(r.pool, "targettest", 0, length, dm.ReadWrite)
		tgt2, err, _ := construct(c.Type, ctx2, strings.Fields(table))
		if err != nil {
			t.Fatalf("%s accepted %q (length %d) but refuses its own table %q: %v", c.Type.Name, args, length, table, err)
		}
		if again := tgt2.Status(dm.StatusTable); again != table {
			t.Fatalf("%s %q: table %q built again prints %q", c.Type.Name, args, table, again)
		}
		closeTarget(t, r, tgt2, ctx2)
		closeTarget(t, r, tgt, ctx)
		r.released(t)
	})
}

// drawArgs mutates valid (replace, drop or insert one token) or draws a
// fresh token list.
func drawArgs(t *rapid.T, valid []string, token *rapid.Generator[string]) []string {
	args := append([]string(nil), valid...)
	switch op := rapid.IntRange(0, 3).Draw(t, "mutation"); {
	case op == 0 && len(args) > 0:
		args[rapid.IntRange(0, len(args)-1).Draw(t, "at")] = token.Draw(t, "token")
	case op == 1 && len(args) > 0:
		i := rapid.IntRange(0, len(args)-1).Draw(t, "at")
		args = append(args[:i], args[i+1:]...)
	case op == 2:
		i := rapid.IntRange(0, len(args)).Draw(t, "at")
		args = append(args[:i], append([]string{token.Draw(t, "token")}, args[i:]...)...)
	default:
		args = rapid.SliceOfN(token, 0, 8).Draw(t, "args")
	}
	return args
}

// checkModel is the property test on the target itself.
func checkModel(tb TB, c Case) {
	tb.Helper()
	c.validate(tb)
	rapid.Check(tb, func(t *rapid.T) {
		r := newRig(c.Devices, rapid.Uint64().Draw(t, "device-seed"))
		tgt, ctx := openTarget(t, c, r, c.Args, c.Len)
		defer func() {
			closeTarget(t, r, tgt, ctx)
			r.released(t)
		}()
		model := c.Model(r.imgs)
		da, has := tgt.(dm.DirectAccesser)
		if _, err := model.DirectAccess(0, 1); has == errors.Is(err, dm.ErrNotSupported) {
			t.Fatalf("target implements DirectAccess: %v; the model's DirectAccess says %v", has, err)
		}
		m := &machine{dev: tgt, model: model, rig: r, size: c.Len.Bytes()}
		if has && c.daxOK() {
			m.da = da.DirectAccess
		}
		t.Repeat(m.actions())
	})
}

// checkConcurrent runs writers and readers on disjoint ranges at once, as
// the Target contract allows; -race sees any shared state they trip on.
func checkConcurrent(tb TB, c Case) {
	tb.Helper()
	c.validate(tb)
	r := newRig(c.Devices, 2)
	tgt, ctx := openTarget(tb, c, r, c.Args, c.Len)
	model := c.Model(r.imgs)
	const workers = 4
	var mu sync.Mutex // guards model
	var wg sync.WaitGroup
	sectors := int64(c.Len)
	for w := range int64(workers) {
		lo, hi := sectors*w/workers*dm.SectorSize, sectors*(w+1)/workers*dm.SectorSize
		if lo < hi {
			wg.Go(func() { worker(tb, tgt, model, &mu, lo, hi, uint64(w)) })
		}
	}
	wg.Wait()
	r.compare(tb)
	closeTarget(tb, r, tgt, ctx)
	r.released(tb)
}

func worker(tb TB, tgt dm.Target, model Model, mu *sync.Mutex, lo, hi int64, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0xc0c0))
	for range 40 {
		off := lo + rng.Int64N(hi-lo)
		n := 1 + rng.Int64N(min(hi-off, maxIO))
		p := make([]byte, n)
		var got, want error
		var op string
		switch rng.IntN(4) {
		case 0:
			fill(rng, p)
			op = "WriteAt"
			_, got = tgt.WriteAt(p, off)
			mu.Lock()
			want = model.WriteAt(p, off)
			mu.Unlock()
		case 1:
			op = "Discard"
			got = tgt.Discard(off, n)
			mu.Lock()
			want = model.Discard(off, n)
			mu.Unlock()
		case 2:
			op = "WriteZeroes"
			got = tgt.WriteZeroes(off, n)
			mu.Lock()
			want = model.WriteZeroes(off, n)
			mu.Unlock()
		case 3:
			op = "ReadAt"
			_, got = tgt.ReadAt(p, off)
			q := make([]byte, n)
			mu.Lock()
			want = model.ReadAt(q, off)
			mu.Unlock()
			if got == nil && want == nil && firstDiff(p, q) >= 0 {
				tb.Errorf("concurrent ReadAt(%d bytes at %d) differs from the model at offset %d", n, off, off+int64(firstDiff(p, q)))
				return
			}
		}
		if s := mismatch(got, want); s != "" {
			tb.Errorf("concurrent %s(%d bytes at %d) %s", op, n, off, s)
			return
		}
	}
}

// TableCase describes a mapped device built from a whole table, for the
// property test through the dm core.
type TableCase struct {
	Types   []*dm.TargetType // registered for the table
	Devices []Device
	Table   string    // table text given to Manager.Create
	Model   ModelFunc // usually TableModel(...)
	// TableText and StatusText are the exact output of Device.Table and
	// Device.Status for the live table; "" skips the comparison.
	TableText, StatusText string
}

// RunTable is the property test through a mapped device made with
// dm.Manager.Create: block I/O, out-of-range I/O, flush and (when every
// device is DAX-capable) direct access against the model, then removal,
// after which every device must be back in the pool.
func RunTable(tb TB, c TableCase) {
	tb.Helper()
	rapid.Check(tb, func(t *rapid.T) {
		r := newRig(c.Devices, rapid.Uint64().Draw(t, "device-seed"))
		reg := dm.NewRegistry()
		for _, tt := range c.Types {
			reg.Register(tt)
		}
		mgr := dm.NewManager(reg, r.pool)
		dev, err := mgr.Create("targettest", dm.CreateOptions{Table: c.Table})
		if err != nil {
			t.Fatalf("create with table %q: %v", c.Table, err)
		}
		defer func() {
			if err := mgr.Remove("targettest", dm.RemoveOptions{}); err != nil {
				t.Errorf("remove: %v", err)
			}
			if n := r.pool.Len(); n != 0 {
				t.Errorf("%d device(s) still open in the pool after remove", n)
			}
		}()
		checkText(t, "Table", dev.Table, c.TableText)
		checkText(t, "Status", dev.Status, c.StatusText)
		m := &machine{dev: dev, model: c.Model(r.imgs), rig: r, size: dev.Size(), bounds: true}
		if (Case{Devices: c.Devices}).daxOK() {
			m.da = dev.DirectAccess
		}
		t.Repeat(m.actions())
	})
}

func checkText(t *rapid.T, what string, get func(dm.Slot) (string, error), want string) {
	if want == "" {
		return
	}
	if got, err := get(dm.Live); err != nil || got != want {
		t.Fatalf("%s = %q, %v; want %q", what, got, err, want)
	}
}

// checkMapped runs RunTable on a one-line table of c.
func checkMapped(tb TB, c Case) {
	tb.Helper()
	c.validate(tb)
	prefix := fmt.Sprintf("0 %d %s ", c.Len, c.Type.Name)
	RunTable(tb, TableCase{
		Types:      []*dm.TargetType{c.Type},
		Devices:    c.Devices,
		Table:      tableLine(c),
		Model:      c.Model,
		TableText:  prefix + c.Table + "\n",
		StatusText: prefix + c.Info + "\n",
	})
}
