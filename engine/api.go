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
)

var statusNames = [...]string{"OK", "NotStored", "Exists", "NotFound", "TooLarge", "NoMemory", "NonNumeric"}

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

	// Vivify (meta "mg N<ttl>"): on a miss, create an empty item with
	// VivifyExptime and hand this caller the win token (ItemInfo.Win).
	Vivify        bool
	VivifyExptime int64

	// Recache (meta "mg R<ttl>"): on a hit whose remaining TTL is below
	// RecacheTTL seconds, hand out the win token once.
	Recache    bool
	RecacheTTL int64

	// Meta marks a meta-protocol fetch: it counts in stats the way memcached
	// counts mg, and reports stale/win state.
	Meta bool
}

// ItemInfo describes an item as an operation saw it.
type ItemInfo struct {
	Flags      uint32
	CAS        uint64
	Exptime    int64 // absolute unix seconds; 0 = never expires
	LastAccess int64 // unix seconds of the access before this one
	Size       int   // value length in bytes

	Fetched bool // the item had been fetched before this access (meta h)
	Stale   bool // the item is marked stale (meta X)
	Win     bool // this caller won the recache token (meta W)
	WinSent bool // the token was already handed to someone else (meta Z)
}

// ArithArgs are the arguments of (*Engine).Arith.
type ArithArgs struct {
	Incr  bool   // true = incr, false = decr
	Delta uint64 // amount

	CAS        uint64 // compare value when CompareCAS (meta "ma C")
	CompareCAS bool

	// Vivify (meta "ma N<ttl>"): a missing item is created holding Initial,
	// with VivifyExptime.
	Vivify        bool
	Initial       uint64
	VivifyExptime int64

	// Touch updates the expiry on a hit (meta "ma T").
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
