package lsm

import "sync/atomic"

// logNotifier wakes the readers of the log (replication sources) when
// LastSeq advances, without polling. It is a broadcast channel that exists
// only while someone waits: LogChanged creates it, the next advance closes
// it and forgets it. An advance with nobody waiting costs one atomic load
// (no allocation, no lock), which is what keeps Commit's path cheap.
//
// No wake-up is lost: an advance stores the new seq before it loads the
// channel, and a waiter creates the channel before it reads the seq, so
// (Go's atomics being sequentially consistent) either the advance sees the
// channel and closes it, or the waiter sees the new seq.
type logNotifier struct {
	ch atomic.Pointer[chan struct{}]
}

// wait returns the current channel, creating it when there is none.
func (n *logNotifier) wait() <-chan struct{} {
	for {
		if p := n.ch.Load(); p != nil {
			return *p
		}
		c := make(chan struct{})
		if n.ch.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

// wake closes the channel of the waiters, if any. Call it after the new
// seq is stored.
func (n *logNotifier) wake() {
	if n.ch.Load() == nil {
		return
	}
	if p := n.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// LogChanged returns a channel that is closed once LastSeq may have
// advanced (or the DB closed) after the call. Take the channel first, then
// read LastSeq, then wait: an advance between the two closes the channel.
// Wake-ups can be spurious; a closed DB returns a closed channel. All
// waiters share one channel, created only while someone waits.
func (db *DB) LogChanged() <-chan struct{} {
	ch := db.logWait.wait()
	if db.closed.Load() {
		db.logWait.wake()
	}
	return ch
}
