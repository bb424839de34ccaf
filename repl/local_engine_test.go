package repl

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// Tests of the production Local (engine + lsm) driven by hand: entries are
// copied from one node's ReadLog into another's Apply, as a link would.

type engineNode struct {
	t     *testing.T
	clk   *clock.Fake
	fs    vfs.FS
	dir   string
	opts  lsm.Options
	db    *lsm.DB
	eng   *engine.Engine
	local Local
}

var localTestStart = time.Unix(1_700_000_000, 0)

func newEngineNode(t *testing.T, clk *clock.Fake, fs vfs.FS, dir string) *engineNode {
	n := &engineNode{t: t, clk: clk, fs: fs, dir: dir, opts: lsm.Options{
		Dir: dir, FS: fs, Replicated: true, Durability: lsm.DurabilitySync, DiskLimit: 1 << 30,
		MemTableSize: 1 << 20, BlockCacheSize: 1 << 20, MaintenanceInterval: -1, Clock: clk,
		Logger: slog.New(slog.DiscardHandler),
	}}
	n.open()
	t.Cleanup(n.close)
	return n
}

func (n *engineNode) open() {
	n.t.Helper()
	db, err := lsm.Open(n.opts)
	if err != nil {
		n.t.Fatalf("open %s: %v", n.dir, err)
	}
	eng, err := engine.New(engine.Options{MemoryLimit: 1 << 20, MaxItemSize: 64 << 10, Clock: n.clk, CrawlerInterval: -1, Disk: db})
	if err != nil {
		n.t.Fatal(err)
	}
	l, err := NewLocal(eng, db)
	if err != nil {
		n.t.Fatal(err)
	}
	n.db, n.eng, n.local = db, eng, l
}

func (n *engineNode) close() {
	if n.db == nil {
		return
	}
	n.eng.Close()
	_ = n.db.Close()
	n.db = nil
}

// crash reopens the node from a crash clone of its filesystem (what was
// synced survives).
func (n *engineNode) crash() {
	n.t.Helper()
	crashed := n.fs.(*vfs.MemFS).CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	n.close()
	n.fs, n.opts.FS = crashed, crashed
	n.open()
}

func (n *engineNode) set(key, value string) {
	n.t.Helper()
	if st, _ := n.eng.Store([]byte(key), []byte(value), &engine.StoreArgs{Flags: 3, Exptime: 1000}); st != engine.OK {
		n.t.Fatalf("set %q: %v", key, st)
	}
	n.clk.Advance(time.Millisecond)
}

func (n *engineNode) del(key string) {
	n.t.Helper()
	n.eng.Delete([]byte(key), &engine.DeleteArgs{})
	n.clk.Advance(time.Millisecond)
}

// contents is key → "value flags exptime" of every live item.
func (n *engineNode) contents() map[string]string {
	n.t.Helper()
	out := map[string]string{}
	var keys []string
	if err := n.eng.Dump(func(it *engine.DumpItem) bool {
		keys = append(keys, string(it.Key))
		return true
	}); err != nil {
		n.t.Fatal(err)
	}
	for _, k := range keys {
		v, info, ok := n.eng.Get(nil, []byte(k), &engine.GetArgs{NoBump: true})
		if ok {
			out[k] = fmt.Sprintf("%s %d %d", v, info.Flags, info.Exptime)
		}
	}
	return out
}

// pull copies src's log into dst from dst's stored offset, at most max
// entries (0: all); entries with a nil record only move the offset, as
// PROGRESS does. It returns the number of entries passed.
func pull(t *testing.T, dst, src *engineNode, max int) int {
	t.Helper()
	peer := src.local.NodeID()
	hist, seq, _ := dst.local.Applied(peer)
	hists := src.local.Histories()
	n := 0
	var applyErr error
	_, err := src.local.ReadLog(seq+1, func(e Entry) bool {
		h := historyOf(hists, e.Seq)
		if e.Record == nil {
			applyErr = dst.local.SetApplied(peer, h, e.Seq)
		} else {
			applyErr = dst.local.Apply(peer, h, e)
		}
		n++
		return applyErr == nil && (max == 0 || n < max)
	})
	if err != nil || applyErr != nil {
		t.Fatalf("pull (from %x/%d): %v %v", hist, seq+1, err, applyErr)
	}
	return n
}

func converged(t *testing.T, a, b *engineNode) {
	t.Helper()
	ca, cb := a.contents(), b.contents()
	if !maps.Equal(ca, cb) {
		t.Fatalf("nodes differ:\n a %v\n b %v", ca, cb)
	}
}

func newPair(t *testing.T) (a, b *engineNode) {
	clk := clock.NewFake(localTestStart)
	fs := vfs.NewCrashableMem()
	return newEngineNode(t, clk, fs, "/a"), newEngineNode(t, clk, vfs.NewCrashableMem(), "/b")
}

func TestLocalEngineConverge(t *testing.T) {
	a, b := newPair(t)
	for i := range 50 {
		a.set(fmt.Sprintf("a%d", i), "va")
		b.set(fmt.Sprintf("b%d", i), "vb")
	}
	a.del("a3")
	a.set("a4", "again")
	pull(t, b, a, 0)
	pull(t, a, b, 0)
	converged(t, a, b)
	if len(a.contents()) != 99 {
		t.Fatalf("%d items, want 99", len(a.contents()))
	}
	// Applied records are not logged: nothing flows back.
	last := b.local.LastSeq()
	if pull(t, a, b, 0) != 0 || b.local.LastSeq() != last || a.local.LastSeq() != 52 {
		t.Fatalf("applied entries were re-logged (last seqs %d %d)", a.local.LastSeq(), b.local.LastSeq())
	}
	// The superseded put of a4 and the delete travel; the put's record is
	// nil (superseded), the delete's is a tombstone.
	var ops []string
	_, _ = a.local.ReadLog(1, func(e Entry) bool {
		if string(e.Key) == "a3" || string(e.Key) == "a4" {
			ops = append(ops, fmt.Sprintf("%s:%d:%v", e.Key, e.Op, e.Record != nil))
		}
		return true
	})
	if fmt.Sprint(ops) != "[a3:1:false a4:1:false a3:2:true a4:1:true]" {
		t.Fatalf("log entries %v", ops)
	}
}

// Conflicting writes on both sides while the link is down: both end with
// the higher version's value, whichever order the entries arrive in.
func TestLocalEngineConflicts(t *testing.T) {
	a, b := newPair(t)
	for i := range 20 {
		k := fmt.Sprintf("k%d", i)
		if i%2 == 0 {
			a.set(k, "a-first")
			b.set(k, "b-second")
		} else {
			b.set(k, "b-first")
			a.set(k, "a-second")
		}
	}
	// Delete vs an older put: b deletes d after a wrote it.
	a.set("d", "put")
	b.set("d", "b-put")
	b.del("d")
	// ... and a put that is newer than a delete.
	b.set("e", "x")
	b.del("e")
	a.set("e", "newer-put")
	pull(t, a, b, 0)
	pull(t, b, a, 0)
	converged(t, a, b)
	c := a.contents()
	for i := range 20 {
		want := "a-second"
		if i%2 == 0 {
			want = "b-second"
		}
		if got := c[fmt.Sprintf("k%d", i)]; got[:len(want)] != want {
			t.Fatalf("k%d = %q, want %q", i, got, want)
		}
	}
	if _, ok := c["d"]; ok {
		t.Fatal("deleted key came back")
	}
	if c["e"][:9] != "newer-put" {
		t.Fatalf("e = %q", c["e"])
	}
}

// flush_all on one side empties both of older items; items written after
// it survive on both, even when written before the flush arrived.
func TestLocalEngineFlush(t *testing.T) {
	a, b := newPair(t)
	a.set("old-a", "1")
	b.set("old-b", "1")
	pull(t, b, a, 0)
	pull(t, a, b, 0)
	a.eng.FlushAll(0)
	a.clk.Advance(time.Millisecond)
	a.set("new-a", "2")
	b.set("new-b", "2") // after the flush, before b hears of it
	pull(t, b, a, 0)
	pull(t, a, b, 0)
	converged(t, a, b)
	c := a.contents()
	if len(c) != 2 || c["new-a"] == "" || c["new-b"] == "" {
		t.Fatalf("after a replicated flush: %v", c)
	}
	a.clk.Advance(2 * time.Second)
	a.db.Maintain()
	b.db.Maintain()
	converged(t, a, b)
	if st := b.eng.Stats(); st.CurrItems != 2 {
		t.Fatalf("b curr_items %d after the flush pass, want 2", st.CurrItems)
	}
}

// B crashes in the middle of applying: it resumes at its stored offset,
// with nothing applied twice or skipped.
func TestLocalEngineCrashResume(t *testing.T) {
	a, b := newPair(t)
	for i := range 40 {
		a.set(fmt.Sprintf("k%d", i), fmt.Sprint("v", i))
	}
	if n := pull(t, b, a, 15); n != 15 {
		t.Fatalf("pulled %d", n)
	}
	b.crash()
	hist, seq, ok := b.local.Applied(a.local.NodeID())
	if !ok || seq != 15 || hist != a.local.Histories()[0].ID {
		t.Fatalf("offset after crash: %x/%d %v", hist, seq, ok)
	}
	if c := b.contents(); len(c) != 15 || c["k14"] == "" || c["k15"] != "" {
		t.Fatalf("b holds %d items after the crash", len(c))
	}
	if n := pull(t, b, a, 0); n != 25 {
		t.Fatalf("resumed with %d entries, want 25", n)
	}
	converged(t, a, b)
}

// A that opens after an unclean shutdown starts a new history; an offset
// inside the old one stays valid, one beyond what A kept does not.
func TestLocalEngineNewHistory(t *testing.T) {
	a, b := newPair(t)
	a.set("x", "1")
	a.set("y", "1")
	pull(t, b, a, 0)
	h0 := a.local.Histories()
	a.crash()
	h1 := a.local.Histories()
	if len(h1) != 2 || h1[0] != h0[0] || h1[1].FirstSeq != 3 || h1[1].ID == h0[0].ID {
		t.Fatalf("histories %+v after an unclean reopen (before %+v)", h1, h0)
	}
	hist, seq, _ := b.local.Applied(a.local.NodeID())
	if d := decidePull(h1, a.local.LastSeq(), hist, seq+1); !d.stream {
		t.Fatalf("offset %x/%d refused: %s", hist, seq, d.reason)
	}
	a.set("z", "2")
	pull(t, b, a, 0)
	converged(t, a, b)
	if hist, _, _ := b.local.Applied(a.local.NodeID()); hist != h1[1].ID {
		t.Fatalf("applied history %x, want %x", hist, h1[1].ID)
	}
}

// A log trimmed past the puller's offset is ErrLogTrimmed; a resync from a
// snapshot then converges and streaming continues after it.
func TestLocalEngineTrimmedResync(t *testing.T) {
	a, b := newPair(t)
	a.opts.LogRetentionAge = time.Minute
	a.close()
	a.open()
	for i := range 30 {
		a.set(fmt.Sprintf("k%d", i), "v")
	}
	a.del("k0")
	a.eng.FlushAll(0)
	a.clk.Advance(time.Millisecond)
	a.set("post-flush", "v")
	b.set("k1", "older-on-b") // written after a's flush: survives it
	a.clk.Advance(2 * time.Minute)
	a.set("last", "v")
	a.db.Maintain()
	if _, err := a.local.ReadLog(1, func(Entry) bool { return true }); !errors.Is(err, ErrLogTrimmed) {
		t.Fatalf("read of a trimmed log: %v", err)
	}
	peer := a.local.NodeID()
	h, seq, err := a.local.Snapshot(func(e Entry) error {
		return b.local.Apply(peer, 0, e)
	})
	if err != nil || seq != a.local.LastSeq() || h != a.local.Histories()[0] {
		t.Fatalf("snapshot: %+v %d %v", h, seq, err)
	}
	if err := b.local.SetApplied(peer, h.ID, seq); err != nil {
		t.Fatal(err)
	}
	a.set("after-snapshot", "v")
	pull(t, b, a, 0)
	pull(t, a, b, 0)
	converged(t, a, b)
	c := b.contents()
	if c["k1"][:10] != "older-on-b" || c["after-snapshot"] == "" || c["post-flush"] == "" || c["k2"] != "" {
		t.Fatalf("after resync: %v", c)
	}
}

func TestLocalEngineNeedsReplicated(t *testing.T) {
	db, err := lsm.Open(lsm.Options{Dir: "/x", FS: vfs.NewMem(), MaintenanceInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eng, err := engine.New(engine.Options{MemoryLimit: 1 << 20, MaxItemSize: 64 << 10, CrawlerInterval: -1, Disk: db})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if _, err := NewLocal(eng, db); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("NewLocal over a store without tombstones: %v", err)
	}
}

// Writes on both nodes while each pulls the other's log: they converge.
func TestLocalEngineConcurrent(t *testing.T) {
	a, b := newPair(t)
	done := make(chan struct{})
	errs := make(chan error, 4)
	write := func(n *engineNode, name string) {
		defer func() { errs <- nil }()
		for i := range 300 {
			k := []byte(fmt.Sprintf("k%d", i%37))
			switch i % 11 {
			case 0:
				n.eng.Delete(k, &engine.DeleteArgs{})
			case 5:
				n.eng.Arith(k, &engine.ArithArgs{Incr: true, Delta: 1})
			default:
				n.eng.Store(k, []byte(fmt.Sprint(name, i)), &engine.StoreArgs{})
			}
			if i == 150 && name == "a" {
				n.eng.FlushAll(0)
			}
		}
	}
	go write(a, "a")
	go write(b, "b")
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		for {
			select {
			case <-done:
				return
			default:
			}
			pull(t, b, a, 50)
			pull(t, a, b, 50)
		}
	}()
	<-errs
	<-errs
	close(done)
	<-pumped
	a.clk.Advance(time.Second)
	pull(t, b, a, 0)
	pull(t, a, b, 0)
	converged(t, a, b)
}
