package engine

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// replicaNode is an engine over a Replicated lsm store in a temp dir.
type replicaNode struct {
	e  *Engine
	db *lsm.DB
}

func newReplicaNode(t *testing.T, clk clock.Clock) *replicaNode {
	t.Helper()
	db, err := lsm.Open(lsm.Options{Dir: t.TempDir(), Durability: lsm.DurabilityNone, MaintenanceInterval: -1,
		Clock: clk, DiskLimit: 1 << 30, Replicated: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e := newLSMEngine(t, clk, db, 1<<20)
	t.Cleanup(func() { e.Close(); db.Close() })
	return &replicaNode{e: e, db: db}
}

func (n *replicaNode) raw(t *testing.T, key string) []byte {
	t.Helper()
	raw, _, err := n.db.GetRaw(nil, []byte(key))
	if err != nil || raw == nil {
		t.Fatalf("raw %q: %v", key, err)
	}
	return raw
}

func (n *replicaNode) get(key string) (string, bool) {
	v, _, ok := n.e.Get(nil, []byte(key), &GetArgs{})
	return string(v), ok
}

func (n *replicaNode) set(t *testing.T, key, value string) uint64 {
	t.Helper()
	st, cas := n.e.Store([]byte(key), []byte(value), &StoreArgs{Flags: 7})
	if st != OK {
		t.Fatalf("set %q: %v", key, st)
	}
	return cas
}

func TestApplyRecordConflicts(t *testing.T) {
	clk := clock.NewFake(testStart)
	a, b := newReplicaNode(t, clk), newReplicaNode(t, clk)
	off := func(seq uint64) lsm.Applied { return lsm.Applied{Peer: a.db.NodeID(), History: 1, Seq: seq} }

	a.set(t, "k", "from-a")
	rawA := a.raw(t, "k")
	b.set(t, "other", "x") // b's CAS counter moves on
	if won, err := b.e.ApplyRecord([]byte("k"), rawA, off(1)); err != nil || !won {
		t.Fatalf("apply: %v %v", won, err)
	}
	v, info, ok := b.e.Get(nil, []byte("k"), &GetArgs{})
	if !ok || string(v) != "from-a" || info.Flags != 7 {
		t.Fatalf("b: %q %v %+v", v, ok, info)
	}
	if info.CAS <= 1 {
		t.Fatalf("applied item CAS %d: not a fresh local CAS", info.CAS)
	}
	// Applying it again changes nothing but the offset.
	if won, err := b.e.ApplyRecord([]byte("k"), rawA, off(2)); err != nil || won {
		t.Fatalf("re-apply: %v %v", won, err)
	}
	if ap, ok, _ := b.db.Applied(a.db.NodeID()); !ok || ap.Seq != 2 {
		t.Fatalf("applied %+v %v", ap, ok)
	}
	// A local write after the apply orders after it (the HLC observed it),
	// so the older record from a loses on b and b's wins on a.
	b.set(t, "k", "from-b")
	if won, _ := b.e.ApplyRecord([]byte("k"), rawA, off(3)); won {
		t.Fatal("an older record won")
	}
	if v, _ := b.get("k"); v != "from-b" {
		t.Fatalf("b k = %q", v)
	}
	if won, _ := a.e.ApplyRecord([]byte("k"), b.raw(t, "k"), lsm.Applied{}); !won {
		t.Fatal("b's newer record lost on a")
	}
	if v, _ := a.get("k"); v != "from-b" {
		t.Fatalf("a k = %q", v)
	}
	// A delete is a tombstone: it wins over the older put, and an older
	// put arriving after it does not bring the key back.
	clk.Advance(time.Millisecond)
	if a.e.Delete([]byte("k"), &DeleteArgs{}) != OK {
		t.Fatal("delete")
	}
	tomb := a.raw(t, "k")
	if won, err := b.e.ApplyRecord([]byte("k"), tomb, lsm.Applied{}); err != nil || !won {
		t.Fatalf("tombstone: %v %v", won, err)
	}
	if _, ok := b.get("k"); ok {
		t.Fatal("deleted key still on b")
	}
	old := lsm.AppendRecord(nil, &lsm.Record{Value: []byte("stale"), Version: lsm.Version{HLC: 1, Node: 9}})
	if won, _ := b.e.ApplyRecord([]byte("k"), old, lsm.Applied{}); won {
		t.Fatal("an old put won over a tombstone")
	}
	if _, ok := b.get("k"); ok {
		t.Fatal("an old put resurrected a deleted key")
	}
	if st := b.e.Stats(); st.CurrItems != 1 {
		t.Fatalf("b curr_items %d, want 1 (tombstones are not items)", st.CurrItems)
	}
	// Garbage is refused.
	bad := slices.Clone(rawA)
	bad[10] ^= 1
	if _, err := b.e.ApplyRecord([]byte("k"), bad, lsm.Applied{}); err == nil {
		t.Fatal("a corrupt record was applied")
	}
}

// A peer's flush marker flushes, on this node too, every record below its
// version, local or not, and nothing written after it.
func TestApplyFlush(t *testing.T) {
	clk := clock.NewFake(testStart)
	a, b := newReplicaNode(t, clk), newReplicaNode(t, clk)
	b.set(t, "before", "1")
	a.set(t, "a-before", "1")
	rawBefore := a.raw(t, "a-before")
	clk.Advance(time.Millisecond)
	a.e.FlushAll(0)
	m := a.db.FlushMarker()
	clk.Advance(time.Millisecond)
	b.set(t, "after", "2") // b has not seen the flush yet
	if won, err := b.e.ApplyFlush(lsm.AppendFlushRecord(nil, m), lsm.Applied{Peer: 1, History: 1, Seq: 1}); err != nil || !won {
		t.Fatalf("apply flush: %v %v", won, err)
	}
	if _, ok := b.get("before"); ok {
		t.Fatal("an item from before the flush survived it")
	}
	if v, ok := b.get("after"); !ok || v != "2" {
		t.Fatal("an item written after the flush was flushed")
	}
	if won, _ := b.e.ApplyRecord([]byte("a-before"), rawBefore, lsm.Applied{}); won {
		t.Fatal("a record below the flush marker was applied")
	}
	b.set(t, "later", "3")
	if _, ok := b.get("later"); !ok {
		t.Fatal("a write after applying the flush is flushed")
	}
	// An older marker loses.
	if won, _ := b.e.ApplyFlush(lsm.AppendFlushRecord(nil, lsm.FlushMarker{OldestLive: 1, Version: lsm.Version{HLC: 5}}), lsm.Applied{}); won {
		t.Fatal("an older flush marker won")
	}
	// The flush pass removes the flushed records from disk, not the others.
	clk.Advance(time.Second)
	b.db.Maintain()
	if st := b.e.Stats(); st.CurrItems != 2 {
		t.Fatalf("b curr_items %d after the flush pass, want 2", st.CurrItems)
	}
}

// Dump lists the live items, from disk with RAM state when a disk is
// configured, from RAM otherwise.
func TestDump(t *testing.T) {
	clk := clock.NewFake(testStart)
	dump := func(e *Engine) []string {
		var out []string
		if err := e.Dump(func(it *DumpItem) bool {
			out = append(out, fmt.Sprintf("%s exp=%d cas=%d fetch=%v size=%d", it.Key, it.Exptime, it.CAS, it.Fetched, it.Size))
			return true
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	n := newReplicaNode(t, clk)
	mem := newTestEngine(t, clk, 1<<20, 64<<10)
	var want []string
	for i := range 600 {
		k := fmt.Sprintf("key%03d", i)
		c1, _ := n.e.Store([]byte(k), []byte("value"), &StoreArgs{Exptime: int64(i % 2 * 100)})
		c2, _ := mem.Store([]byte(k), []byte("value"), &StoreArgs{Exptime: int64(i % 2 * 100)})
		if c1 != OK || c2 != OK {
			t.Fatal("store")
		}
	}
	n.e.Delete([]byte("key000"), &DeleteArgs{})
	mem.Delete([]byte("key000"), &DeleteArgs{})
	n.e.Get(nil, []byte("key001"), &GetArgs{})
	mem.Get(nil, []byte("key001"), &GetArgs{})
	d1, d2 := dump(n.e), dump(mem)
	if len(d1) != 599 || len(d2) != 599 {
		t.Fatalf("dumped %d and %d items, want 599", len(d1), len(d2))
	}
	for _, d := range [][]string{d1, d2} {
		if want = []string{"key001 exp=" + fmt.Sprint(testStart.Unix()+100)}; !bytes.HasPrefix([]byte(d[0]), []byte(want[0])) ||
			!bytes.Contains([]byte(d[0]), []byte("fetch=true")) || !bytes.Contains([]byte(d[1]), []byte("exp=0")) {
			t.Fatalf("dump starts %q %q", d[0], d[1])
		}
	}
	stop := 0
	_ = n.e.Dump(func(*DumpItem) bool { stop++; return stop < 3 })
	if stop != 3 {
		t.Fatalf("dump went on after fn returned false (%d calls)", stop)
	}
}

// A disk read is promoted into RAM at once when the shard's live data has
// room, even if its free chunks are used up by dead records.
func TestAdmitDeadSpace(t *testing.T) {
	clk := clock.NewFake(testStart)
	d := newFakeDisk()
	e := newDiskEngine(t, clk, d, 1<<20, 64<<10)
	s, h := e.shardFor([]byte("cold"))
	if st, _ := e.Store([]byte("cold"), []byte("v"), &StoreArgs{}); st != OK {
		t.Fatal("store")
	}
	e.tier.drop(s, h, []byte("cold"))
	var hot []byte
	for i := 0; hot == nil; i++ {
		if k := fmt.Appendf(nil, "hot%d", i); func() bool { s2, _ := e.shardFor(k); return s2 == s }() {
			hot = k
		}
	}
	value := bytes.Repeat([]byte("x"), 2000)
	for i := 0; i < 10000; i++ {
		if st, _ := e.Store(hot, value, &StoreArgs{}); st != OK {
			t.Fatal("store hot")
		}
		s.mu.Lock()
		full := s.mu.small.chunksNeeded(64)+reserveChunks+1 >= len(s.mu.free)
		s.mu.Unlock()
		if full && i > 100 {
			break
		}
	}
	s.mu.Lock()
	free := len(s.mu.free)
	s.mu.Unlock()
	if free > reserveChunks+2 {
		t.Fatalf("%d free chunks: the shard did not fill with dead records", free)
	}
	before := e.Stats().Promotions
	if v, _, ok := e.Get(nil, []byte("cold"), &GetArgs{}); !ok || string(v) != "v" {
		t.Fatal("cold key")
	}
	if got := e.Stats().Promotions - before; got != 1 {
		t.Fatalf("promotions %d on the first read with dead space only, want 1", got)
	}
}
