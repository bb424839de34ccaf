package lsm

import (
	"runtime"
	"sync"
)

// Group commit of durability sync.
//
// Pebble shares one WAL fsync among the commits waiting when it starts,
// but under GOMAXPROCS 1 (tcache -t 1) hardly any are waiting: the first
// commit's Apply wakes the WAL writer as the next goroutine to run, and
// its fdatasync keeps the only P while it blocks, so the connections with
// requests ready only commit after it, one fsync each (docs/disk-tier.md,
// "Group commit"). So sync commits apply without a sync, and the first
// one to wait becomes the leader of a group: it yields once, so that the
// committers already runnable apply their batches too, then makes
// everything applied durable for all of them (DB.syncGroup: a journal
// store's journal, and its WAL when a commit of the group wrote to
// Pebble; a Pebble store's WAL, one LogData with Sync: the WAL is
// sequential). Commits that arrive during the fsync wait for the next
// leader.
type groupSync struct {
	mu      sync.Mutex
	cond    sync.Cond
	applied uint64 // tickets handed out: sync commits applied (under DB.mu too)
	synced  uint64 // every ticket up to it is durable
	running bool   // a leader is syncing
	err     error  // sticky: the WAL sync failed
}

// ticket is called under DB.mu after a sync commit's batch was applied;
// the commit passes it to wait.
func (g *groupSync) ticket() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.applied++
	return g.applied
}

// wait returns once the batch of ticket t is durable, or the sync's
// error: the leader calls sync once for its whole group.
func (g *groupSync) wait(sync func() error, t uint64) error {
	g.mu.Lock()
	if g.cond.L == nil {
		g.cond.L = &g.mu
	}
	for g.running && g.synced < t && g.err == nil {
		g.cond.Wait()
	}
	if g.synced >= t || g.err != nil {
		err := g.err
		g.mu.Unlock()
		return err
	}
	g.running = true
	g.mu.Unlock()

	runtime.Gosched() // the runnable committers apply and queue behind us
	g.mu.Lock()
	target := g.applied
	g.mu.Unlock()
	err := sync()

	g.mu.Lock()
	g.running = false
	if err != nil {
		g.err = err
	} else {
		g.synced = max(g.synced, target)
	}
	g.cond.Broadcast()
	g.mu.Unlock()
	return err
}
