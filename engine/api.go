package engine

// This file is the contract between the engine and its callers (protocol/,
// later repl/): the argument and result types of every operation. The
// operations themselves are methods of *Engine, documented where they are
// implemented.
//
// Conventions shared by every operation:
//   - Keys and values passed in are borrowed for the duration of the call only;
//     the engine copies what it keeps.
//   - Exptime arguments are raw memcached exptimes exactly as a client sent
//     them: 0 = never, 1..30 days (2592000 s) = relative seconds, larger =
//     absolute unix time, negative = already expired. The engine converts them
//     with its clock (see (*Engine).AbsExptime).
//   - Nothing on these paths allocates in the steady state.

// Status is the outcome of an operation, one value per distinct memcached
// reply.
type Status uint8

const (
	// OK: stored / deleted / touched / found, per operation.
	OK Status = iota
	// NotStored: add of a present key, replace/append/prepend of a missing key.
	NotStored
	// Exists: CAS mismatch (reply EXISTS).
	Exists
	// NotFound: the key is absent (or expired, or flushed).
	NotFound
	// TooLarge: the item exceeds the maximum item size
	// (SERVER_ERROR object too large for cache).
	TooLarge
	// NoMemory: the item could not be placed in memory
	// (SERVER_ERROR out of memory storing object).
	NoMemory
	// NonNumeric: incr/decr of a value that is not a decimal 64-bit unsigned
	// (CLIENT_ERROR cannot increment or decrement non-numeric value).
	NonNumeric
	// DiskFull: the disk tier refused the write because it is at its limit
	// in persistent mode (lsm.ErrDiskFull). Nothing changed; reads keep
	// working. Reply as memcached does when memory is exhausted:
	// SERVER_ERROR out of memory storing object.
	DiskFull
	// DiskError: the disk tier failed to commit the write (an I/O error,
	// or the disk was closed). Nothing changed. Reply SERVER_ERROR disk
	// write failed.
	DiskError
)

var statusNames = [...]string{"OK", "NotStored", "Exists", "NotFound", "TooLarge", "NoMemory", "NonNumeric", "DiskFull", "DiskError"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "Status(?)"
}

// Mode selects the storage command.
type Mode uint8

const (
	ModeSet Mode = iota
	ModeAdd
	ModeReplace
	ModeAppend
	ModePrepend
	// ModeCAS stores only if the item exists and its CAS equals StoreArgs.CAS
	// (text "cas"; meta "ms" with a C flag in set mode).
	ModeCAS
)

// StoreArgs are the arguments of (*Engine).Store.
type StoreArgs struct {
	Mode    Mode
	Flags   uint32 // client flags (32 bit, opaque to the server)
	Exptime int64  // raw memcached exptime (see package conventions)

	// CAS is the compare value for ModeCAS, and for the other modes when
	// CompareCAS is set (meta "ms ... C<cas>" with append/prepend/...).
	CAS        uint64
	CompareCAS bool

	// Invalidate is meta "ms I": when the compare fails because the given
	// CAS is older than the item's, store anyway and mark the item stale.
	Invalidate bool

	// Vivify is meta "ms N<ttl>" in append/prepend mode: a missing item is
	// created (with VivifyExptime) instead of answering NotStored.
	Vivify        bool
	VivifyExptime int64

	// Meta marks a meta-protocol store (ms): when the item is too large, the
	// existing item is removed whatever the mode (text commands remove it
	// only for set), as memcached 1.6.18 does.
	Meta bool

	// KeyBinary (meta "ms ... b"): the key arrived base64-encoded. The item
	// remembers it (memcached ITEM_KEY_BINARY) and reports it in
	// ItemInfo.KeyBinary, so mg k and me echo the key encoded even when it
	// is later fetched by a plain key. As in memcached, set, add, replace
	// and cas keep the mark; append and prepend build a new item without it.
	KeyBinary bool
}

// GetArgs are the arguments of (*Engine).Get. The zero value is a plain get.
type GetArgs struct {
	// Touch updates the expiry to Exptime on a hit (gat/gats, meta "mg T").
	Touch   bool
	Exptime int64

	// NoValue skips copying the value (meta "mg" without v).
	NoValue bool
	// NoBump leaves access time, fetched bit and eviction priority untouched
	// (meta "mg u").
	NoBump bool

	// Vivify (meta "mg N<ttl>"): on a miss, create an empty item and hand
	// this caller the win token (ItemInfo.Win, ItemInfo.Created). The item
	// expires per VivifyExptime, or per Exptime when Touch is also set and
	// VivifyAfterTouch is not.
	Vivify        bool
	VivifyExptime int64

	// Recache (meta "mg R<ttl>"): on a hit whose remaining TTL is below
	// RecacheTTL seconds, hand out the win token once. The TTL compared is
	// the one before this call's touch unless RecacheAfterTouch.
	Recache    bool
	RecacheTTL int64

	// memcached's mg applies T, N and R in request order, in one pass over
	// the flags. VivifyAfterTouch: N came after T, so a created item ends
	// with VivifyExptime. RecacheAfterTouch: R came after T, so it compares
	// the touched exptime.
	VivifyAfterTouch  bool
	RecacheAfterTouch bool

	// Meta marks a meta-protocol fetch: it counts in stats the way memcached
	// counts mg, and reports stale/win state.
	Meta bool
}

// ItemInfo describes an item as an operation saw it.
type ItemInfo struct {
	Flags      uint32
	CAS        uint64
	Exptime    int64 // absolute unix seconds after this call; 0 = never expires
	LastAccess int64 // unix seconds of the access before this one
	Size       int   // value length in bytes

	Fetched bool // the item had been fetched before this access (meta h)
	Stale   bool // the item is marked stale (meta X)
	Win     bool // this caller won the recache token (meta W)
	// WinSent: the token had been handed to someone else before this call
	// (meta Z). Never set together with Created.
	WinSent bool
	// Created: the item did not exist and this call created it (Get and
	// Arith with Vivify). A quiet ma still answers for a created counter.
	Created bool
	// KeyBinary: the item was stored with a base64 key (StoreArgs.KeyBinary).
	KeyBinary bool

	// TTL is the remaining time to live in seconds after this call's touch
	// or vivify, as memcached computes it for meta t; -1 = never expires.
	TTL int64
	// PrevExptime and PrevTTL are Exptime and TTL before this call changed
	// them (equal to them when it did not; 0 and -1 for a created item,
	// which memcached creates without expiry). mg and ma print t at its
	// place in the flag list, before or after T and N take effect.
	PrevExptime int64
	PrevTTL     int64
	// Idle is the seconds since the access before this one (meta l).
	Idle int64
}

// ArithArgs are the arguments of (*Engine).Arith.
type ArithArgs struct {
	Incr  bool   // true = incr, false = decr
	Delta uint64 // amount

	CAS        uint64 // compare value when CompareCAS (meta "ma C")
	CompareCAS bool

	// Vivify (meta "ma N<ttl>"): a missing item is created holding Initial
	// (ItemInfo.Created), with VivifyExptime, or with Exptime when Touch is
	// also set and VivifyAfterTouch is not (memcached applies ma's T and N
	// in request order).
	Vivify           bool
	Initial          uint64
	VivifyExptime    int64
	VivifyAfterTouch bool

	// Touch updates the expiry (meta "ma T"); ItemInfo.PrevTTL keeps the
	// TTL from before.
	Touch   bool
	Exptime int64
}

// DeleteArgs are the arguments of (*Engine).Delete. The zero value is a
// plain delete.
type DeleteArgs struct {
	CAS        uint64 // compare value when CompareCAS (meta "md C")
	CompareCAS bool

	// Invalidate (meta "md I"): instead of removing the item, mark it stale
	// (and update its TTL when Touch is set, meta "md T").
	Invalidate bool
	Touch      bool
	Exptime    int64
}
