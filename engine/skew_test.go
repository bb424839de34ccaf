package engine

import (
	"log/slog"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

func (n *replicaNode) version(t *testing.T, key string) lsm.Version {
	t.Helper()
	h, err := lsm.ParseRecord(n.raw(t, key))
	if err != nil {
		t.Fatal(err)
	}
	return h.Version
}

func hlcOf(tm time.Time) uint64 { return uint64(tm.UnixMilli()) << hlcLogicalBits }

// A peer's record stamped 10 s ahead (MaxClockSkew 500ms) applies with its
// own version, is counted, and does not drag this node's clock: its other
// keys keep versions near its wall clock. A local write of the same key
// still orders after the record (or the two nodes would diverge), and so
// does a second one; both win on the peer. A record within the bound is
// followed as before.
func TestApplyAheadOfClock(t *testing.T) {
	ca, cb := clock.NewFake(testStart.Add(10*time.Second)), clock.NewFake(testStart)
	a, b := newReplicaNode(t, ca), newReplicaNode(t, cb)
	a.set(t, "k", "from-a")
	va := a.version(t, "k")
	if won, err := b.e.ApplyRecord([]byte("k"), a.raw(t, "k"), lsm.Applied{}); err != nil || !won {
		t.Fatalf("apply: %v %v", won, err)
	}
	if got := b.version(t, "k"); got != va {
		t.Fatalf("applied version %+v, want the origin's %+v", got, va)
	}
	if n := b.e.Stats().ClockAhead; n != 1 {
		t.Fatalf("ClockAhead %d, want 1", n)
	}
	b.set(t, "other", "x")
	// The clock stopped at wall + 500ms: the next value is in that
	// millisecond (one logical tick above it).
	if v, limit := b.version(t, "other").HLC, hlcOf(testStart.Add(500*time.Millisecond)); v>>hlcLogicalBits > limit>>hlcLogicalBits {
		t.Fatalf("b's next version %x is beyond its wall clock + 500ms (%x): dragged", v, limit)
	}
	// Local writes of k order after a's record, and after each other.
	b.set(t, "k", "from-b")
	vb1 := b.version(t, "k")
	if !va.Less(vb1) {
		t.Fatalf("b's write %+v is not after a's record %+v", vb1, va)
	}
	b.set(t, "k", "from-b2")
	vb2 := b.version(t, "k")
	if !vb1.Less(vb2) {
		t.Fatalf("b's second write %+v is not after its first %+v", vb2, vb1)
	}
	if won, err := a.e.ApplyRecord([]byte("k"), b.raw(t, "k"), lsm.Applied{}); err != nil || !won {
		t.Fatalf("b's write lost on a: %v %v", won, err)
	}
	if x, _ := a.get("k"); x != "from-b2" {
		t.Fatalf("a k = %q", x)
	}
	if x, _ := b.get("k"); x != "from-b2" {
		t.Fatalf("b k = %q", x)
	}
	// A delete of such a key orders after it too.
	a.set(t, "d", "from-a")
	if won, _ := b.e.ApplyRecord([]byte("d"), a.raw(t, "d"), lsm.Applied{}); !won {
		t.Fatal("apply d")
	}
	if b.e.Delete([]byte("d"), &DeleteArgs{}) != OK {
		t.Fatal("delete d")
	}
	if won, _ := a.e.ApplyRecord([]byte("d"), b.raw(t, "d"), lsm.Applied{}); !won {
		t.Fatal("b's delete lost on a")
	}
	if _, ok := a.get("d"); ok {
		t.Fatal("d still on a")
	}
	// Once the wall clock passes the records, the map empties and writes
	// take the clock's versions again.
	cb.Set(testStart.Add(11 * time.Second))
	b.set(t, "k", "later")
	if b.e.tier.ahead.n.Load() != 0 {
		t.Fatalf("%d keys still ahead after the clock passed them", b.e.tier.ahead.n.Load())
	}
	// Within the bound: followed, not counted.
	ca.Set(testStart.Add(11*time.Second + 300*time.Millisecond))
	a.set(t, "near", "x")
	if won, _ := b.e.ApplyRecord([]byte("near"), a.raw(t, "near"), lsm.Applied{}); !won {
		t.Fatal("apply near")
	}
	b.set(t, "after", "y")
	if !a.version(t, "near").Less(b.version(t, "after")) {
		t.Fatal("a record within the bound did not move the clock")
	}
	if n := b.e.Stats().ClockAhead; n != 2 {
		t.Fatalf("ClockAhead %d, want 2 (k and d)", n)
	}
}

// When too many keys are ahead, a record beyond the bound moves the clock
// after all: ordering comes first.
func TestApplyAheadFull(t *testing.T) {
	defer func(n int) { maxAheadKeys = n }(maxAheadKeys)
	maxAheadKeys = 2
	ca, cb := clock.NewFake(testStart.Add(10*time.Second)), clock.NewFake(testStart)
	a, b := newReplicaNode(t, ca), newReplicaNode(t, cb)
	for _, k := range []string{"k1", "k2", "k3"} {
		a.set(t, k, "v")
		if won, _ := b.e.ApplyRecord([]byte(k), a.raw(t, k), lsm.Applied{}); !won {
			t.Fatalf("apply %s", k)
		}
	}
	b.set(t, "other", "x")
	if !a.version(t, "k3").Less(b.version(t, "other")) {
		t.Fatal("a full map did not fall back to moving the clock")
	}
}

// With MaxClockSkew negative there is no bound: the clock follows.
func TestApplyAheadUnbounded(t *testing.T) {
	ca, cb := clock.NewFake(testStart.Add(10*time.Second)), clock.NewFake(testStart)
	a := newReplicaNode(t, ca)
	db, err := lsm.Open(lsm.Options{Dir: t.TempDir(), Durability: lsm.DurabilityNone, MaintenanceInterval: -1,
		Clock: cb, DiskLimit: 1 << 30, Replicated: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{MemoryLimit: 1 << 20, MaxItemSize: 64 << 10, Clock: cb, CrawlerInterval: -1, Disk: db, MaxClockSkew: -1})
	if err != nil {
		t.Fatal(err)
	}
	b := &replicaNode{e: e, db: db}
	t.Cleanup(func() { e.Close(); db.Close() })
	a.set(t, "k", "v")
	if won, _ := b.e.ApplyRecord([]byte("k"), a.raw(t, "k"), lsm.Applied{}); !won {
		t.Fatal("apply")
	}
	b.set(t, "other", "x")
	if !a.version(t, "k").Less(b.version(t, "other")) || b.e.Stats().ClockAhead != 0 {
		t.Fatal("no bound, yet the clock did not follow")
	}
}
