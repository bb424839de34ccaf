package repl

import "errors"

// This file is the contract between replication and the node's own storage.
// docs/replication.md explains the model. The production implementation
// (an adapter over *engine.Engine and its *lsm.DB) lives in this package too;
// tests use an in-memory one.

// Op is the kind of a replicated mutation.
type Op uint8

const (
	OpPut    Op = 1 // Record is an encoded item
	OpDelete Op = 2 // Record is an encoded tombstone
	OpFlush  Op = 3 // Record is an encoded flush marker
)

// Entry is one mutation as it crosses a link. Record is the storage layer's
// encoding (lsm's record format, with its version and checksum): opaque to
// the link, decoded and checked by Local.Apply.
//
// Key and Record are borrowed: an Entry passed to a callback or to Apply is
// valid only during that call (the link reuses its buffers).
type Entry struct {
	Seq    uint64 // the source's log sequence number; 0 in a snapshot
	Op     Op
	Key    []byte // empty for OpFlush; at most 65535 bytes
	Record []byte

	// Millis is the wall-clock time of the record's version in unix
	// milliseconds (the HLC's physical part, HLC >> 16), 0 when unknown.
	// ReadLog sets it; the link only uses it for lag in milliseconds.
	Millis uint64
}

// History is one stretch of a node's log: a node that opens after an unclean
// shutdown starts a new history at its last seq + 1.
type History struct {
	ID       uint64
	FirstSeq uint64
}

// ErrLogTrimmed is returned by Local.ReadLog when the requested seq is
// older than the log's head.
var ErrLogTrimmed = errors.New("repl: log no longer holds that sequence")

// Local is what a link needs from this node.
type Local interface {
	// NodeID is this node's persistent id.
	NodeID() uint64
	// Histories lists this node's log histories, oldest first, with
	// strictly increasing FirstSeq; the list changes only when the node
	// opens (never while a Server runs) and keeps at least the histories
	// of the entries the log still holds. IDs are non-zero.
	Histories() []History
	// LastSeq is the last durable seq of this node's log.
	LastSeq() uint64
	// LogChanged returns a channel that is closed once LastSeq may have
	// advanced after the call (spurious wake-ups are allowed). A source
	// that has shipped everything takes the channel, re-reads LastSeq and
	// only then waits on it, so an advance in between is not missed. It
	// should cost nothing while nobody waits: it is on the write path.
	LogChanged() <-chan struct{}
	// ReadLog calls fn for the durable entries from seq on, in order, each
	// with the record of its version; entries whose key has since been
	// overwritten are passed with a nil Record (the link reports them as
	// progress only). It stops when fn returns false or the durable end is
	// reached, and returns the last seq it passed (from-1 when it passed
	// none; the entry on which fn returned false counts as passed).
	// ErrLogTrimmed (possibly wrapped) when from is below the log head.
	// Entries are valid during fn only; fn does no I/O, so ReadLog may hold
	// an iterator or a read lock across the calls.
	ReadLog(from uint64, fn func(e Entry) bool) (last uint64, err error)
	// Snapshot calls fn for every record (items and tombstones) and the
	// current flush marker at one consistent point, and returns the history
	// and seq of that point: the data it passed holds every log entry up to
	// seq and none after. e.Seq is 0. fn writes to the network (it blocks
	// under backpressure), so Snapshot must not hold locks that writers
	// need while it calls fn; an error from fn aborts and is returned.
	Snapshot(fn func(e Entry) error) (h History, seq uint64, err error)

	// Apply applies one entry from peer with the conflict rule (the higher
	// version wins) and, in the same atomic write, records that peer's
	// history hist is applied up to e.Seq (when e.Seq > 0). It never writes
	// to this node's own log. A record that loses (older than the stored
	// version, or below the flush marker) is dropped but the offset is still
	// recorded. Calls for one peer are never concurrent.
	Apply(peer, hist uint64, e Entry) error
	// SetApplied records an applied offset with no data (progress over
	// skipped entries, the end of a resync).
	SetApplied(peer, hist, seq uint64) error
	// Applied returns the stored offset for peer (ok false when none was
	// ever stored: the link then pulls from seq 1).
	Applied(peer uint64) (hist, seq uint64, ok bool)
}
