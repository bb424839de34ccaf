package engine

// Data-driven engine tests: every file under testdata/ is a script of
// directives run against a fresh engine with a fake clock and no background
// crawler. Regenerate expected output with
//
//	go test ./engine -run TestDataDriven -rewrite
//
// Directives (values are shown with %q):
//
//	new [memory=BYTES] [maxitem=BYTES]     replace the engine
//	set key=K [value=V] [flags=N] [exptime=N] [mode=set|add|replace|append|prepend|cas]
//	    [cas=N] [compare] [invalidate] [meta] [binary] [size=N]  value defaults
//	    to the input block; size=N stores N bytes of 'a'
//	get key=K [touch=EXP] [novalue] [nobump] [vivify=EXP] [recache=TTL] [meta]
//	    [vivify-after-touch] [recache-after-touch]
//	incr|decr key=K delta=N [cas=N] [vivify=EXP initial=N] [touch=EXP]
//	    [vivify-after-touch]
//
// Item descriptions show prev=/prevttl= only when the call changed the
// expiry, and the flags fetched, stale, win, winsent, created, binary.
//	delete key=K [cas=N] [invalidate] [touch=EXP]
//	touch key=K exptime=N
//	flush [delay=N]
//	advance SECONDS                        move the fake clock
//	abs exptime=N                          AbsExptime, shown relative to now
//	crawl                                  one crawler pass
//	reset                                  stats reset
//	stats                                  the non-zero counters

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/tcache/tcache/internal/clock"
)

// testStart is the fake clock's start: a fixed, realistic unix time.
var testStart = time.Unix(1_760_000_000, 0)

func newTestEngine(t testing.TB, clk *clock.Fake, memory int64, maxItem int) *Engine {
	t.Helper()
	e, err := New(Options{MemoryLimit: memory, MaxItemSize: maxItem, Clock: clk, CrawlerInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		clk := clock.NewFake(testStart)
		mk := func(mem int64, maxItem int) *Engine { return newTestEngine(t, clk, mem, maxItem) }
		e := mk(0, 0)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return runDirective(t, d, clk, &e, mk, false)
		})
	})
}

// TestDataDrivenDisk runs the same scripts over a disk tier (an in-memory
// fake of lsm): every memcached rule must answer the same. The stats
// directive is not compared (curr_items comes from the disk, bytes count
// the locations).
func TestDataDrivenDisk(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		clk := clock.NewFake(testStart)
		var disks []*fakeDisk
		mk := func(mem int64, maxItem int) *Engine {
			d := newFakeDisk()
			disks = append(disks, d)
			return newDiskEngine(t, clk, d, mem, maxItem)
		}
		e := mk(0, 0)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return runDirective(t, d, clk, &e, mk, true)
		})
		for _, d := range disks {
			for _, p := range d.problems() {
				t.Error(p)
			}
		}
	})
}

func newDiskEngine(t testing.TB, clk *clock.Fake, d diskStore, memory int64, maxItem int) *Engine {
	t.Helper()
	e, err := newEngine(Options{MemoryLimit: memory, MaxItemSize: maxItem, Clock: clk, CrawlerInterval: -1}, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func argStr(d *datadriven.TestData, key string) (string, bool) {
	a, ok := d.Arg(key)
	if !ok {
		return "", false
	}
	if len(a.Vals) == 0 {
		return "", true
	}
	return a.Vals[0], true
}

func argInt(t *testing.T, d *datadriven.TestData, key string) (int64, bool) {
	s, ok := argStr(d, key)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		uv, err2 := strconv.ParseUint(s, 10, 64)
		if err2 != nil {
			t.Fatalf("%s: %s=%q: %v", d.Pos, key, s, err)
		}
		return int64(uv), true
	}
	return v, true
}

func argU64(t *testing.T, d *datadriven.TestData, key string) (uint64, bool) {
	v, ok := argInt(t, d, key)
	return uint64(v), ok
}

func showInfo(b *strings.Builder, in ItemInfo, now int64) {
	fmt.Fprintf(b, " flags=%d cas=%d size=%d", in.Flags, in.CAS, in.Size)
	if in.Exptime == 0 {
		b.WriteString(" exp=never")
	} else {
		fmt.Fprintf(b, " exp=now%+d ttl=%d", in.Exptime-now, in.TTL)
	}
	if in.PrevExptime != in.Exptime || in.PrevTTL != in.TTL {
		if in.PrevExptime == 0 {
			fmt.Fprintf(b, " prev=never prevttl=%d", in.PrevTTL)
		} else {
			fmt.Fprintf(b, " prev=now%+d prevttl=%d", in.PrevExptime-now, in.PrevTTL)
		}
	}
	fmt.Fprintf(b, " idle=%d", in.Idle)
	for _, f := range []struct {
		on   bool
		name string
	}{{in.Fetched, "fetched"}, {in.Stale, "stale"}, {in.Win, "win"}, {in.WinSent, "winsent"},
		{in.Created, "created"}, {in.KeyBinary, "binary"}} {
		if f.on {
			b.WriteString(" " + f.name)
		}
	}
}

func runDirective(t *testing.T, d *datadriven.TestData, clk *clock.Fake, ep **Engine,
	mk func(mem int64, maxItem int) *Engine, disk bool) string {
	e := *ep
	key, _ := argStr(d, "key")
	now := clk.Now().Unix()
	var b strings.Builder
	switch d.Cmd {
	case "new":
		mem, _ := argInt(t, d, "memory")
		mi, _ := argInt(t, d, "maxitem")
		e.Close()
		*ep = mk(mem, int(mi))
		return ""
	case "set":
		var a StoreArgs
		value, ok := argStr(d, "value")
		if !ok {
			value = d.Input
		}
		if n, ok := argInt(t, d, "size"); ok {
			value = strings.Repeat("a", int(n))
		}
		if f, ok := argU64(t, d, "flags"); ok {
			a.Flags = uint32(f)
		}
		a.Exptime, _ = argInt(t, d, "exptime")
		a.CAS, _ = argU64(t, d, "cas")
		a.CompareCAS = d.HasArg("compare")
		a.Invalidate = d.HasArg("invalidate")
		a.Meta = d.HasArg("meta")
		a.KeyBinary = d.HasArg("binary")
		mode, _ := argStr(d, "mode")
		switch mode {
		case "", "set":
		case "add":
			a.Mode = ModeAdd
		case "replace":
			a.Mode = ModeReplace
		case "append":
			a.Mode = ModeAppend
		case "prepend":
			a.Mode = ModePrepend
		case "cas":
			a.Mode = ModeCAS
		default:
			t.Fatalf("%s: bad mode %q", d.Pos, mode)
		}
		st, cas := e.Store([]byte(key), []byte(value), &a)
		if st == OK {
			return fmt.Sprintf("OK cas=%d", cas)
		}
		return st.String()
	case "get":
		var a GetArgs
		a.Exptime, a.Touch = argInt(t, d, "touch")
		a.NoValue = d.HasArg("novalue")
		a.NoBump = d.HasArg("nobump")
		a.VivifyExptime, a.Vivify = argInt(t, d, "vivify")
		a.RecacheTTL, a.Recache = argInt(t, d, "recache")
		a.VivifyAfterTouch = d.HasArg("vivify-after-touch")
		a.RecacheAfterTouch = d.HasArg("recache-after-touch")
		a.Meta = d.HasArg("meta")
		v, info, found := e.Get(nil, []byte(key), &a)
		if !found {
			return "miss"
		}
		fmt.Fprintf(&b, "hit value=%q", v)
		showInfo(&b, info, now)
		return b.String()
	case "incr", "decr":
		a := ArithArgs{Incr: d.Cmd == "incr"}
		a.Delta, _ = argU64(t, d, "delta")
		a.CAS, a.CompareCAS = argU64(t, d, "cas")
		a.VivifyExptime, a.Vivify = argInt(t, d, "vivify")
		a.Initial, _ = argU64(t, d, "initial")
		a.Exptime, a.Touch = argInt(t, d, "touch")
		a.VivifyAfterTouch = d.HasArg("vivify-after-touch")
		v, info, st := e.Arith([]byte(key), &a)
		if st != OK {
			return st.String()
		}
		val := peek(e, []byte(key))
		fmt.Fprintf(&b, "OK %d stored=%q", v, val)
		showInfo(&b, info, now)
		return b.String()
	case "delete":
		var a DeleteArgs
		a.CAS, a.CompareCAS = argU64(t, d, "cas")
		a.Invalidate = d.HasArg("invalidate")
		a.Exptime, a.Touch = argInt(t, d, "touch")
		return e.Delete([]byte(key), &a).String()
	case "touch":
		exp, _ := argInt(t, d, "exptime")
		return e.Touch([]byte(key), exp).String()
	case "flush":
		delay, _ := argInt(t, d, "delay")
		e.FlushAll(delay)
		return "OK"
	case "advance":
		secs, err := strconv.Atoi(d.CmdArgs[0].Key)
		if err != nil {
			t.Fatalf("%s: advance SECONDS: %v", d.Pos, err)
		}
		clk.Advance(time.Duration(secs) * time.Second)
		return ""
	case "abs":
		exp, _ := argInt(t, d, "exptime")
		abs := e.AbsExptime(exp)
		if abs == 0 {
			return "never"
		}
		return fmt.Sprintf("now%+d", abs-now)
	case "reset":
		e.ResetStats()
		return ""
	case "crawl":
		e.Crawl()
		return ""
	case "stats":
		if disk {
			return d.Expected
		}
		return showStats(e.Stats())
	default:
		t.Fatalf("%s: unknown directive %q", d.Pos, d.Cmd)
		return ""
	}
}

func showStats(st Stats) string {
	fields := []struct {
		name string
		v    uint64
	}{
		{"cmd_get", st.CmdGet}, {"get_hits", st.GetHits}, {"get_misses", st.GetMisses},
		{"get_expired", st.GetExpired}, {"get_flushed", st.GetFlushed}, {"cmd_set", st.CmdSet},
		{"cmd_touch", st.CmdTouch}, {"touch_hits", st.TouchHits}, {"touch_misses", st.TouchMisses},
		{"delete_hits", st.DeleteHits}, {"delete_misses", st.DeleteMisses},
		{"incr_hits", st.IncrHits}, {"incr_misses", st.IncrMisses},
		{"decr_hits", st.DecrHits}, {"decr_misses", st.DecrMisses},
		{"cas_hits", st.CasHits}, {"cas_misses", st.CasMisses}, {"cas_badval", st.CasBadval},
		{"cmd_flush", st.CmdFlush}, {"curr_items", st.CurrItems}, {"total_items", st.TotalItems},
		{"bytes", st.Bytes}, {"evictions", st.Evictions}, {"reclaimed", st.Reclaimed},
		{"expired_unfetched", st.ExpiredUnfetched}, {"evicted_unfetched", st.EvictedUnfetched},
		{"crawler_reclaimed", st.CrawlerReclaimed},
	}
	var b strings.Builder
	for _, f := range fields {
		if f.v != 0 {
			fmt.Fprintf(&b, "%s %d\n", f.name, f.v)
		}
	}
	return b.String()
}

// peek returns the stored value of key without touching counters or state.
func peek(e *Engine, key []byte) []byte {
	s, h := e.shardFor(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	var it item
	if !s.find(h, key, &it) {
		return nil
	}
	return it.r.appendTo(nil, it.valuePos(), int(it.hdr.valueLen))
}
