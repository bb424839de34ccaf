package lsm

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// LogChanged is closed when LastSeq advances, whatever the durability
// (with interval, at the syncer's fsync, not at the commit), and not by a
// commit that writes no log entry (an applied peer record).
func TestLogChanged(t *testing.T) {
	for _, dur := range []Durability{DurabilityNone, DurabilitySync, DurabilityInterval} {
		t.Run(dur.String(), func(t *testing.T) {
			o := replicatedOptions(vfs.NewMem(), clock.NewFake(testStart))
			o.Durability = dur
			o.DurabilityInterval = time.Hour // the test runs the syncer itself
			db := mustOpen(t, o)
			defer db.Close()

			ch := db.LogChanged()
			if closed(ch) {
				t.Fatal("closed before any commit")
			}
			if ch2 := db.LogChanged(); ch2 != ch {
				t.Fatal("two waiters got different channels")
			}
			// A commit that logs nothing: an applied offset.
			b := db.NewBatch()
			b.SetApplied(Applied{Peer: 7, History: 1, Seq: 1})
			mustCommit(t, db, b)
			if closed(ch) {
				t.Fatal("closed by a commit without log entries")
			}
			before := db.LastSeq()
			put(t, db, "k", "v", 0, 100)
			if dur == DurabilityInterval {
				if closed(ch) || db.LastSeq() != before {
					t.Fatal("interval: woken before the entry is durable")
				}
				db.syncWAL()
			}
			if !closed(ch) {
				t.Fatal("not closed after the log grew")
			}
			if db.LastSeq() != before+1 {
				t.Fatalf("LastSeq %d, want %d", db.LastSeq(), before+1)
			}
			next := db.LogChanged()
			if closed(next) {
				t.Fatal("a new wait got a closed channel")
			}
			_ = db.Close()
			if !closed(next) || !closed(db.LogChanged()) {
				t.Fatal("Close does not wake the waiters")
			}
		})
	}
}

// With nobody waiting, a commit does no more than before: no channel is
// created.
func TestLogChangedNoWaiter(t *testing.T) {
	o := replicatedOptions(vfs.NewMem(), clock.NewFake(testStart))
	o.Durability = DurabilityNone
	db := mustOpen(t, o)
	defer db.Close()
	put(t, db, "k", "v", 0, 100)
	if db.logWait.ch.Load() != nil {
		t.Fatal("a commit created a channel nobody waits on")
	}
}
