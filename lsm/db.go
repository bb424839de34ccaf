package lsm

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// DB is tcache's disk tier: one Pebble store and, in cache mode, the
// journal of item records it references. It is safe for concurrent use;
// the engine serialises writes of one key (its stripe locks).
type DB struct {
	opts  Options
	pdb   *pebble.DB
	j     *journal // item records (journal.go); Pebble's d holds references
	cache *pebble.Cache
	codec *recordCodec
	log   *slog.Logger
	node  uint64
	wo    *pebble.WriteOptions // Sync for DurabilitySync, NoSync otherwise
	// useJournal: every item mutation goes to the journal, indexed by the
	// keydir (cache mode, JournalMin not negative: a journal store).
	useJournal bool
	// groupSyncFn makes the commits of a sync group durable (groupsync.go):
	// the journal, then Pebble's WAL when a commit of the group wrote to
	// it (walDirty), or Pebble's WAL alone in a Pebble store.
	groupSyncFn func() error
	walDirty    atomic.Bool
	hists       []History     // log histories, oldest first; fixed at Open
	reindexTook time.Duration // the re-index at Open (reindex.go); zero when none ran

	fsyncs     atomic.Uint64
	corruptLog rateLimitedLog

	failure atomic.Pointer[error] // first fatal Pebble error (ErrFailed)

	// closeMu is held shared by every call into Pebble and exclusively by
	// Close, so that no call runs into a closed Pebble.
	closeMu sync.RWMutex
	closed  atomic.Bool

	// Lock-free copies of mu's state for the read path.
	liveEpochs atomic.Uint64 // lo<<32 | cur
	usage      atomic.Int64  // disk usage at the last measurement + bytes committed since
	walSpare   atomic.Int64  // bytes within usage the limit ignores (see refreshUsage)
	lastSeq    atomic.Uint64 // last sequence number committed (visible)
	durableSeq atomic.Uint64 // last sequence number known to be fsynced
	logFirst   atomic.Uint64
	sweepGen   atomic.Uint64 // bumped when the sweeper deletes records (see Batch.gen)
	recounting atomic.Bool
	pendingSyn atomic.Bool // commits since the syncer's last fsync
	logWait    logNotifier // LogChanged: woken when LastSeq advances
	gsync      groupSync   // the shared fsyncs of durability sync (groupsync.go)

	// mu serialises commits, in sequence-number order, and every change of
	// the state below (the epoch table, high-water marks, the flush marker).
	// Pebble I/O is done under it only to enter the commit pipeline in order
	// (and for the short re-checks of maintenance): fsync waits happen
	// outside it.
	mu struct {
		sync.Mutex
		seq          uint64 // last assigned sequence number
		logBytes     int64  // approximate bytes of the log
		epochs       epochTable
		sinceAdvance int64 // bytes written since the epoch last advanced (cache mode)
		// putsSinceAdvance counts the records written since then.
		putsSinceAdvance int64
		cas              uint64
		hlcReserved      uint64 // persisted HLC high-water mark
		hlcMax           uint64 // highest version written
		flush            FlushMarker
		flushDone        int64 // OldestLive of the last executed flush
		indexDirty       bool  // epochs died: the index pass has k/x entries to remove
		unhanded         bool  // rollLocked froze a table that handOffLocked has not handed
		// applied is each peer's applied offset committed since Open, or
		// found in the journal's tail (journal stores: Pebble holds the
		// ones of ingested segments).
		applied map[uint64]Applied
		// framesSinceCkpt counts the journal frames appended since the
		// last keydir checkpoint (or Open): what a crash would replay.
		framesSinceCkpt int64
	}

	// For tests: ckptEvery, when not zero, replaces checkpointDue's rule;
	// ckptAfterPos runs between a checkpoint's position and its copy of
	// the shards. (The maintenance pass's checkpoint and Close's, which
	// write the same file, never overlap: closeMu.)
	ckptEvery    int64
	ckptAfterPos func()

	// sweepHold is the longest the keydir sweeper held the commit mutex
	// at once (maintainMu; BenchmarkKeydirSweep).
	sweepHold time.Duration

	// maintainMu makes Maintain passes one at a time; it also guards the
	// cursors of the bounded passes.
	maintainMu struct {
		sync.Mutex
		indexCursor []byte // next k key of the index pass
		expCursor   []byte // next x key of the dead-epoch x pass
		flushCursor []byte // next d key of the record-by-record flush (Replicated)
		flushShard  int    // a journal store's: next keydir shard, +1 (0: not begun)
		flushOf     Version
	}

	stale struct {
		sync.Mutex
		keys [][]byte // k keys seen pointing at dead epochs (Get), removed by Maintain
	}

	st struct {
		reads, bytesRead, writes, bytesWritten, badCRC       atomic.Uint64
		drops, droppedItems, droppedBytes, diskFull          atomic.Uint64
		writeErrors, sweeperRuns, swept, commits, compactDbt atomic.Uint64
		tombstones, tombSwept, checkpoints                   atomic.Uint64
		hintHits, hintMisses, indexReads, lost, ingests      atomic.Uint64
	}

	keyBufs   sync.Pool // *[]byte scratch for keys on the read path
	frameBufs sync.Pool // *[]byte scratch for journal frames on the read path
	hints     *hints    // location hints of records in Pebble (nil: Options.IndexMemory 0, or a journal store)

	// kd is the keydir (keydir.go): where every key's current record is
	// in the journal. Nil when records are kept in Pebble (useJournal
	// false).
	kd *keydir
	// pend holds the position and log entries of journal frames until
	// their segment's sstables are ingested (pending.go); the sealer
	// ingests the sealed tables (seal.go), kicked by sealKick.
	pend     pendIndex
	sealKick chan struct{}
	sstOpts  sstable.WriterOptions // the m table of an ingestion
	// seqOpts writes an ingestion's s and l tables: no bloom filter and
	// no block compression (newSeqWriterOptions).
	seqOpts sstable.WriterOptions

	bg struct {
		stop chan struct{}
		wg   sync.WaitGroup
	}
}

// hlcMargin is how far ahead of the highest written version the persisted
// HLC high-water mark is reserved (one second of HLC time), so that a crash
// never loses it and it is written at most about once a second.
const hlcMargin = 1000 << 16

// Open opens (creating if needed) the store in opts.Dir. A directory
// written by another format is refused with ErrIncompatible before anything
// is written; one in use by another process is refused by Pebble's lock.
func Open(opts Options) (*DB, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	fs := opts.FS
	useJournal := opts.Mode == ModeCache && opts.JournalMin >= 0
	if err := checkFormat(fs, opts.Dir, useJournal); err != nil {
		return nil, err
	}
	if err := fs.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lsm: create %s: %w", opts.Dir, err)
	}
	db := &DB{
		opts:  opts,
		codec: newRecordCodec(opts.Codec, opts.CompressMin),
		log:   opts.Logger.With("component", "lsm"),
		wo:    pebble.NoSync,
	}
	if opts.Durability == DurabilitySync {
		db.wo = pebble.Sync
	}
	db.useJournal = useJournal
	db.groupSyncFn = db.syncGroup
	db.keyBufs.New = func() any { b := make([]byte, 0, 256); return &b }
	db.frameBufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	db.cache = pebble.NewCache(opts.BlockCacheSize)
	db.mu.applied = make(map[uint64]Applied)
	db.pend.open = newSegIndex(0)
	db.sealKick = make(chan struct{}, 1)
	db.bg.stop = make(chan struct{})
	el := &pebble.EventListener{
		BackgroundError: func(err error) {
			db.st.writeErrors.Add(1)
			db.log.Warn("pebble background error", "err", err)
		},
	}
	po := pebbleOptions(&opts, syncCountingFS{FS: fs, n: &db.fsyncs}, db.cache,
		fatalLogger{log: db.log, fail: db.fail}, el)
	pdb, err := pebble.Open(opts.Dir, po)
	if err != nil {
		db.cache.Unref()
		return nil, openError(opts.Dir, err)
	}
	db.pdb = pdb
	db.sstOpts = po.MakeWriterOptions(0, pdb.TableFormat())
	db.seqOpts = newSeqWriterOptions(db.sstOpts)
	// No location hints while load re-indexes the journal: its reads
	// would leave hints to the records it supersedes.
	err = db.load()
	if err == nil && !db.useJournal {
		db.hints, err = newHints(opts.IndexMemory)
	}
	if err != nil {
		db.kd.free()
		if db.j != nil {
			_ = db.j.Close()
		}
		_ = pdb.Close()
		db.cache.Unref()
		return nil, err
	}
	db.bg.wg.Add(1)
	go func() {
		defer db.bg.wg.Done()
		db.sealer()
	}()
	if opts.MaintenanceInterval > 0 {
		db.goBackground(opts.MaintenanceInterval, db.Maintain)
	}
	if opts.Durability == DurabilityInterval {
		db.goBackground(opts.DurabilityInterval, db.syncWAL)
	}
	if db.recounting.Load() {
		db.bg.wg.Add(1)
		go func() {
			defer db.bg.wg.Done()
			db.recount()
		}()
	}
	return db, nil
}

func openError(dir string, err error) error {
	if strings.Contains(err.Error(), "lock") {
		return fmt.Errorf("lsm: data directory %s is in use by another process: %w", dir, err)
	}
	return fmt.Errorf("lsm: open %s: %w", dir, err)
}

// checkFormat refuses a directory that holds something other than a store
// of this format, or one written by the other data path than the one
// useJournal asks for, before anything is written: it opens an existing
// store read-only and reads its format marker and data path. A refused
// directory is not modified: one without Pebble's markers (CURRENT or
// marker.manifest.*) is refused from its listing alone, and the read-only
// open goes through checkFS, which does not create the LOCK file Pebble's
// open would.
func checkFormat(fs vfs.FS, dir string, useJournal bool) error {
	names, err := fs.List(dir)
	if err != nil || len(names) == 0 {
		return nil // absent or empty: a new store
	}
	if !slices.ContainsFunc(names, isPebbleMarker) {
		return fmt.Errorf("%w: %s is not empty and holds no store (found %d files, expected format %s/%d)",
			ErrIncompatible, dir, len(names), formatMagic, formatVersion)
	}
	ro, err := pebble.Open(dir, &pebble.Options{FS: checkFS{fs}, ReadOnly: true, Logger: quietLogger{}})
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return fmt.Errorf("%w: %s is not empty and holds no store (found %d files, expected format %s/%d)",
				ErrIncompatible, dir, len(names), formatMagic, formatVersion)
		}
		return openError(dir, err)
	}
	defer ro.Close()
	v, closer, err := ro.Get(metaFormat)
	if errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("%w: %s has no format marker (found none, expected %s/%d)", ErrIncompatible, dir, formatMagic, formatVersion)
	}
	if err != nil {
		return fmt.Errorf("lsm: read format marker: %w", err)
	}
	found, derr := decodeFormat(v)
	closer.Close()
	if derr != nil {
		return fmt.Errorf("%w: %s: %v (expected %s/%d)", ErrIncompatible, dir, derr, formatMagic, formatVersion)
	}
	if found < formatVersionPebbleOnly || found > formatVersion {
		return fmt.Errorf("%w: %s has format %s/%d, expected %s/%d", ErrIncompatible, dir, formatMagic, found, formatMagic, formatVersion)
	}
	want := dataPathPebble
	if useJournal {
		want = dataPathJournal
	}
	if found == formatVersionIndexed {
		// A version 3 store indexed its journal frames in Pebble a
		// segment at a time; after a crash the frames after the indexed
		// marker are indexed only by a version 3 open, which this
		// version no longer has.
		if v, closer, err := ro.Get(metaClosed); err == nil {
			clean := len(v) == 1 && v[0] == 1
			closer.Close()
			if !clean {
				return fmt.Errorf("%w: %s was not closed cleanly by the tcache of format %s/%d, and its last journal frames are indexed only by that version: start that version once and stop it cleanly, then this one",
					ErrIncompatible, dir, formatMagic, found)
			}
		}
	}
	if found < formatVersion && useJournal {
		return fmt.Errorf("%w: %s has format %s/%d, whose records this version keeps in Pebble: open it in mode persistent (converting it to a journal store is not built yet: docs/keydir.md)",
			ErrIncompatible, dir, formatMagic, found)
	}
	if v, closer, err := ro.Get(metaDataPath); err == nil {
		path := string(v)
		closer.Close()
		if path != want {
			return fmt.Errorf("%w: %s keeps its records in the %s, and this configuration (mode) would keep them in the %s: open it as it was written (moving a store between the two is not built yet: docs/keydir.md)",
				ErrIncompatible, dir, path, want)
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("lsm: read data path: %w", err)
	}
	return nil
}

// isPebbleMarker reports whether name is a file only a Pebble store has.
func isPebbleMarker(name string) bool {
	return name == "CURRENT" || strings.HasPrefix(name, "marker.manifest.")
}

// checkFS is the file system of checkFormat's read-only open: Lock takes
// the existing LOCK file (so a store in use is still detected), and when
// there is none it locks nothing rather than create one. No process can
// hold a store without its LOCK file: Pebble creates it at open and never
// removes it.
type checkFS struct{ vfs.FS }

func (fs checkFS) Lock(name string) (io.Closer, error) {
	if _, err := fs.FS.Stat(name); errors.Is(err, os.ErrNotExist) {
		return io.NopCloser(nil), nil
	}
	return fs.FS.Lock(name)
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(string, ...any) {}

// getMeta reads a metadata value (a copy), nil when absent.
func (db *DB) getMeta(k []byte) ([]byte, error) {
	v, closer, err := db.pdb.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lsm: read metadata %q: %w", k[1:], err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// load reads the metadata (creating it in a new store), finds the log's
// bounds and marks the store open (unclean until Close).
func (db *DB) load() error {
	b := db.pdb.NewBatch()
	defer b.Close()
	fresh := false
	if v, err := db.getMeta(metaFormat); err != nil {
		return err
	} else if v == nil {
		fresh = true
		_ = b.Set(metaFormat, encodeFormat(formatVersion), nil)
	} else if f, _ := decodeFormat(v); f < formatVersion {
		// Every record of a version 1 to 3 store is in Pebble, or
		// referenced from d, which the Pebble path reads as it is
		// (checkFormat refused it to the journal path); the marker moves
		// on before anything is written, so that an older tcache refuses
		// the store from now on.
		_ = b.Set(metaFormat, encodeFormat(formatVersion), nil)
		db.log.Info("disk store format upgraded", "from", f, "to", formatVersion)
	}
	if v, err := db.getMeta(metaDataPath); err != nil {
		return err
	} else if v == nil { // checkFormat compared an existing one
		path := dataPathPebble
		if db.useJournal {
			path = dataPathJournal
		}
		_ = b.Set(metaDataPath, []byte(path), nil)
	}
	var clean bool
	closed := -1 // absent: a store from before histories (treated as clean)
	for _, m := range []struct {
		key []byte
		fn  func(v []byte) error
	}{
		{metaNode, func(v []byte) (err error) { db.node, err = decodeU64(v); return }},
		{metaCAS, func(v []byte) (err error) { db.mu.cas, err = decodeU64(v); return }},
		{metaHLC, func(v []byte) (err error) { db.mu.hlcReserved, err = decodeU64(v); return }},
		{metaFlush, func(v []byte) (err error) { db.mu.flush, err = decodeFlushMarker(v); return }},
		{metaFlushDone, func(v []byte) error { d, err := decodeU64(v); db.mu.flushDone = int64(d); return err }},
		{metaEpochs, func(v []byte) (err error) { db.mu.epochs, err = decodeEpochTable(v); return }},
		{metaLogFirst, func(v []byte) error { f, err := decodeU64(v); db.logFirst.Store(f); return err }},
		{metaClean, func(v []byte) error { clean = len(v) == 1 && v[0] == 1; return nil }},
		{metaClosed, func(v []byte) error {
			if closed = 0; len(v) == 1 && v[0] == 1 {
				closed = 1
			}
			return nil
		}},
		{metaHistories, func(v []byte) (err error) { db.hists, err = decodeHistories(v); return }},
	} {
		v, err := db.getMeta(m.key)
		if err != nil {
			return err
		}
		if v == nil {
			continue
		}
		if err := m.fn(v); err != nil {
			return fmt.Errorf("lsm: metadata %q: %w", m.key[1:], err)
		}
	}
	if db.node == 0 {
		var r [8]byte
		for db.node == 0 {
			if _, err := rand.Read(r[:]); err != nil {
				return fmt.Errorf("lsm: node id: %w", err)
			}
			db.node = binary.BigEndian.Uint64(r[:])
		}
		_ = b.Set(metaNode, u64(db.node), nil)
	}
	if db.mu.epochs.stat == nil {
		db.mu.epochs = epochTable{lo: 1, cur: 1, stat: make([]epochStat, 1)}
		_ = b.Set(metaEpochs, db.mu.epochs.encode(), nil)
	}
	if db.logFirst.Load() == 0 {
		db.logFirst.Store(1)
	}
	db.mu.hlcMax = db.mu.hlcReserved
	last, err := db.lastLogSeq()
	if err != nil {
		return err
	}
	db.mu.seq = max(last, db.logFirst.Load()-1)
	// The journal: appends continue in its last segment only after a
	// clean close; segments of epochs dropped before a crash go now.
	j, err := openJournal(db.opts.FS, db.opts.FS.PathJoin(db.opts.Dir, journalDirName),
		db.mu.epochs.cur, fresh || closed != 0, &db.fsyncs)
	if err != nil {
		return err
	}
	db.j = j
	j.noDirect.Store(db.opts.BufferedJournal)
	if _, err := j.RemoveBelow(db.mu.epochs.lo); err != nil {
		return err
	}
	// A segment of an epoch above the table's: the commit that advanced
	// the epoch was in Pebble's WAL buffer when the process died, while
	// frames of the new epoch reached the journal. The segment's header
	// is durable evidence of the advance: take it again, or those frames
	// (and a peer's applied offsets among them) would be dropped as dead.
	top := db.mu.epochs.cur
	for _, s := range j.Segments() {
		top = max(top, s.Epoch)
	}
	if top > db.mu.epochs.cur {
		for db.mu.epochs.cur < top {
			db.mu.epochs.advance()
		}
		_ = b.Set(metaEpochs, db.mu.epochs.encode(), nil)
		db.log.Warn("epoch advance lost in a crash taken again from the journal", "epoch", top)
	}
	db.publishEpochs()
	if db.useJournal {
		if err := db.loadKeydir(b, !clean && !fresh); err != nil {
			return err
		}
	}
	db.pend.open = newSegIndex(j.Segment())
	db.lastSeq.Store(db.mu.seq)
	db.durableSeq.Store(db.mu.seq)
	if err := db.openHistory(len(db.hists) == 0 || (!fresh && closed == 0)); err != nil {
		return err
	}
	_ = b.Set(metaHistories, encodeHistories(db.hists), nil)
	_ = b.Set(metaClosed, []byte{0}, nil)
	if n, err := db.pdb.EstimateDiskUsage([]byte{prefixLog}, []byte{prefixLog + 1}); err == nil {
		db.mu.logBytes = int64(n)
	}
	db.mu.indexDirty = true // finish any index pass a previous run left
	if !clean && !fresh && !db.useJournal {
		db.recounting.Store(true) // loadKeydir counted a journal store's items
	}
	_ = b.Set(metaClean, []byte{0}, nil)
	wo := db.wo
	if !db.opts.disableWAL() {
		wo = pebble.Sync
	}
	if err := db.pdb.Apply(b, wo); err != nil {
		return fmt.Errorf("lsm: write metadata: %w", err)
	}
	if err := db.failed(); err != nil {
		return err
	}
	if fresh {
		db.log.Info("created disk store", "dir", db.opts.Dir, "node", fmt.Sprintf("%016x", db.node))
	}
	db.refreshUsage()
	return nil
}

func (o *Options) disableWAL() bool { return o.Durability == DurabilityNone }

// openHistory starts a new log history at the next sequence number when
// fresh is set (a new store, or an open after an unclean shutdown, which
// may have lost a tail that peers applied), and forgets the histories
// whose entries the log no longer holds.
func (db *DB) openHistory(fresh bool) error {
	if fresh {
		var id uint64
		var r [8]byte
		for id == 0 {
			if _, err := rand.Read(r[:]); err != nil {
				return fmt.Errorf("lsm: history id: %w", err)
			}
			id = binary.BigEndian.Uint64(r[:])
		}
		first := db.mu.seq + 1
		if len(db.hists) == 0 {
			first = 1 // a store from before histories: its whole log
		}
		if n := len(db.hists); n > 0 && db.hists[n-1].FirstSeq == first {
			db.hists = db.hists[:n-1] // the previous history holds no entry
		}
		db.hists = append(db.hists, History{ID: id, FirstSeq: first})
		if len(db.hists) > 1 {
			db.log.Warn("log history changed after an unclean shutdown", "history", fmt.Sprintf("%016x", id), "first_seq", first)
		}
	}
	head := db.logFirst.Load()
	for len(db.hists) > 1 && db.hists[1].FirstSeq <= head {
		db.hists = db.hists[1:]
	}
	return nil
}

// Histories lists this store's log histories, oldest first, with strictly
// increasing FirstSeq (docs/replication.md). It changes only at Open.
func (db *DB) Histories() []History { return append([]History(nil), db.hists...) }

// LastSeq is the last durable sequence number of the log (the end
// ReadLog reads to).
func (db *DB) LastSeq() uint64 {
	if db.opts.Durability == DurabilityNone {
		return db.lastSeq.Load()
	}
	return db.durableSeq.Load()
}

// lastLogSeq finds the highest l key.
func (db *DB) lastLogSeq() (uint64, error) {
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLog}, UpperBound: []byte{prefixLog + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if !it.Last() {
		return 0, it.Error()
	}
	k := it.Key()
	if len(k) != 9 {
		return 0, fmt.Errorf("%w: log key %q", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// publishEpochs copies the live epoch range for lock-free readers.
// Requires mu (or exclusive access during Open).
func (db *DB) publishEpochs() {
	db.liveEpochs.Store(uint64(db.mu.epochs.lo)<<32 | uint64(db.mu.epochs.cur))
}

func (db *DB) epochLive(e uint32) bool {
	v := db.liveEpochs.Load()
	return e >= uint32(v>>32) && e <= uint32(v)
}

func (db *DB) curEpoch() uint32 { return uint32(db.liveEpochs.Load()) }

// fail marks the DB failed with the first fatal error.
func (db *DB) fail(err error) {
	e := fmt.Errorf("%w: %w", ErrFailed, err)
	db.failure.CompareAndSwap(nil, &e)
}

func (db *DB) failed() error {
	if p := db.failure.Load(); p != nil {
		return *p
	}
	return nil
}

func (db *DB) goBackground(every time.Duration, fn func()) {
	db.bg.wg.Add(1)
	go func() {
		defer db.bg.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-db.bg.stop:
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// syncWAL is the interval syncer: it fsyncs the WAL when commits happened
// since its last run, and advances the durable sequence number.
func (db *DB) syncWAL() {
	if !db.pendingSyn.Swap(false) || db.failed() != nil {
		return
	}
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return
	}
	seq := db.lastSeq.Load()
	// The journal first: a reference made durable by the WAL fsync below
	// then names a durable frame.
	if err := db.syncJournal(); err != nil {
		db.st.writeErrors.Add(1)
		return
	}
	if err := db.pdb.LogData(nil, pebble.Sync); err != nil || db.failed() != nil {
		db.st.writeErrors.Add(1)
		return
	}
	db.advanceDurable(seq)
}

// syncGroup is the sync group leader's fsync (groupSyncFn): in a journal
// store the journal's frames, then the WAL if a commit of the group wrote
// to Pebble (metadata: an epoch advance, a high-water mark), so that an
// acknowledged frame never outlives the epoch it was written in; in a
// Pebble store the WAL.
func (db *DB) syncGroup() error {
	if db.kd != nil {
		if err := db.syncJournal(); err != nil {
			return err
		}
		if !db.walDirty.Swap(false) {
			return nil
		}
	}
	return db.pdb.LogData(nil, pebble.Sync)
}

// syncJournal writes the journal's appended frames and fsyncs them.
func (db *DB) syncJournal() error {
	end, err := db.j.Write()
	if err == nil {
		err = db.j.SyncTo(end)
	}
	return err
}

func (db *DB) advanceDurable(seq uint64) {
	for {
		d := db.durableSeq.Load()
		if seq <= d {
			return
		}
		if db.durableSeq.CompareAndSwap(d, seq) {
			if db.opts.Durability != DurabilityNone {
				db.logWait.wake() // LastSeq is the durable seq
			}
			return
		}
	}
}

// NodeID is this store's persistent random node id.
func (db *DB) NodeID() uint64 { return db.node }

// CASHighWater is the persisted CAS high-water mark: every CAS value handed
// out before (by any run) is below it, if the engine reserves with
// Batch.ReserveCAS before handing values out.
func (db *DB) CASHighWater() uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.cas
}

// HLCHighWater is at or above every version written to this store, across
// crashes (it is reserved ahead by up to one second of HLC time).
func (db *DB) HLCHighWater() uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return max(db.mu.hlcReserved, db.mu.hlcMax)
}

// FlushMarker is the last flush_all committed (zero if none).
func (db *DB) FlushMarker() FlushMarker {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.flush
}

// Close stops the background work, persists the counters and the HLC
// high-water mark, flushes the memtables when there is no WAL, and closes
// Pebble. A DB that failed is closed without writing.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return ErrClosed
	}
	db.logWait.wake()
	close(db.bg.stop)
	db.bg.wg.Wait()
	db.closeMu.Lock()
	defer db.closeMu.Unlock()
	var errs []error
	// The journal is written and synced before the store is marked closed
	// cleanly: a clean close promises every referenced frame is on disk,
	// and that Pebble indexes all of them (the pending tables left are
	// ingested here, so the next open re-indexes nothing).
	seg, end := db.j.Segment(), db.j.OpenSize()
	jerr := db.j.Close()
	if jerr != nil {
		errs = append(errs, jerr)
	}
	if db.failed() == nil && jerr == nil {
		if err := db.sealAll(seg, end); err != nil {
			errs = append(errs, err)
		}
	}
	if db.kd != nil && db.failed() == nil && jerr == nil {
		// Not an error to report: without it the next open replays the
		// position entries (slower, as after a crash).
		if err := writeCheckpoint(db.opts.FS, db.checkpointPath(), db.kd, ckptPos{Seg: seg, Off: end}, nil); err != nil {
			// An older checkpoint would miss what this run removed in RAM
			// only (swept, flushed): without one, Open replays every
			// position entry instead.
			_ = db.opts.FS.Remove(db.checkpointPath())
			db.log.Warn("keydir checkpoint not written", "err", err)
		}
	}
	if db.failed() == nil && jerr == nil {
		db.mu.Lock()
		b := db.pdb.NewBatch()
		_ = b.Set(metaHLC, u64(max(db.mu.hlcReserved, db.mu.hlcMax)), nil)
		_ = b.Set(metaEpochs, db.mu.epochs.encode(), nil)
		if !db.recounting.Load() {
			_ = b.Set(metaClean, []byte{1}, nil)
		}
		_ = b.Set(metaClosed, []byte{1}, nil)
		wo := pebble.Sync
		if db.opts.disableWAL() {
			wo = pebble.NoSync
		}
		if err := db.pdb.Apply(b, wo); err != nil {
			errs = append(errs, err)
		}
		_ = b.Close()
		db.mu.Unlock()
		if db.opts.disableWAL() && db.failed() == nil {
			if err := db.pdb.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("flush memtables: %w", err))
			}
		}
		if err := db.failed(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := db.pdb.Close(); err != nil && db.failed() == nil {
		errs = append(errs, err)
	}
	db.cache.Unref()
	db.codec.close()
	db.hints.free()
	db.kd.free()
	if len(errs) > 0 {
		return fmt.Errorf("lsm: close: %w", errors.Join(errs...))
	}
	return nil
}

// refreshUsage measures Pebble's disk space usage and compaction debt.
func (db *DB) refreshUsage() {
	m := db.pdb.Metrics()
	db.usage.Store(int64(diskUsage(m)) + db.j.Size())
	// Recycled WAL files are bounded by the memtables, not by the data, and
	// obsolete and zombie tables and blob files are being deleted: the
	// limit is enforced on the rest, so that a drop is not repeated while
	// files go away.
	db.walSpare.Store(int64(m.WAL.ObsoletePhysicalSize + m.Table.Local.ObsoleteSize + m.Table.Local.ZombieSize +
		m.BlobFiles.Local.ObsoleteSize + m.BlobFiles.Local.ZombieSize))
	db.st.compactDbt.Store(m.Compact.EstimatedDebt)
}

// diskUsage is m.DiskSpaceUsage with the live blob files taken from the
// current version (BlobFiles.LiveSize). Pebble v2.1.7 does not count the
// blob files that exist at open in BlobFiles.Local.LiveSize, only the ones
// created since (versionSet.load initialises the table figure, not the
// blob one), so after a restart DiskSpaceUsage misses most of the values,
// and when those files are deleted the figure would wrap below zero. The
// arithmetic is modulo 2^64, so the wrapped term cancels exactly.
func diskUsage(m *pebble.Metrics) uint64 {
	return m.DiskSpaceUsage() - m.BlobFiles.Local.LiveSize + m.BlobFiles.LiveSize
}

// dataUsage is the disk usage that the limit applies to.
func (db *DB) dataUsage() int64 { return db.usage.Load() - db.walSpare.Load() }

// Stats returns the disk tier's figures.
func (db *DB) Stats() Stats {
	db.mu.Lock()
	var items, bytes int64
	for _, s := range db.mu.epochs.stat {
		items += s.items
		bytes += s.bytes
	}
	epochs := uint64(db.mu.epochs.cur-db.mu.epochs.lo) + 1
	db.mu.Unlock()
	s := Stats{
		LimitBytes:      uint64(db.opts.DiskLimit),
		BytesUsed:       uint64(max(db.usage.Load(), 0)),
		Items:           uint64(max(items, 0)),
		ItemBytes:       uint64(max(bytes, 0)),
		Reads:           db.st.reads.Load(),
		BytesRead:       db.st.bytesRead.Load(),
		Writes:          db.st.writes.Load(),
		BytesWritten:    db.st.bytesWritten.Load(),
		BadCRC:          db.st.badCRC.Load(),
		Lost:            db.st.lost.Load(),
		JournalBytes:    uint64(db.j.Size()),
		JournalSegments: uint64(len(db.j.Segments())),
		JournalReleased: db.j.rel.bytes.Load(),
		CompressSkipped: db.codec.skipped.Load(),
		IndexIngests:    db.st.ingests.Load(),
		HintHits:        db.st.hintHits.Load(),
		HintMisses:      db.st.hintMisses.Load(),
		IndexReads:      db.st.indexReads.Load(),
		Drops:           db.st.drops.Load(),
		DroppedItems:    db.st.droppedItems.Load(),
		DroppedBytes:    db.st.droppedBytes.Load(),
		Epochs:          epochs,
		DiskFull:        db.st.diskFull.Load(),
		WriteErrors:     db.st.writeErrors.Load(),
		SweeperRuns:     db.st.sweeperRuns.Load(),
		Swept:           db.st.swept.Load(),
		Fsyncs:          db.fsyncs.Load(),
		Commits:         db.st.commits.Load(),
		CompactDebt:     db.st.compactDbt.Load(),
		LogFirst:        db.logFirst.Load(),
		LogLast:         db.lastSeq.Load(),
		Tombstones:      db.st.tombstones.Load(),
		TombSwept:       db.st.tombSwept.Load(),
	}
	if n := len(db.hists); n > 0 {
		s.History = db.hists[n-1].ID
	}
	pos, _, mem := db.pend.stats()
	s.IndexPending, s.IndexPendingBytes = uint64(pos), uint64(max(mem, 0))
	if db.kd != nil {
		s.KeydirKeys, s.KeydirBytes = uint64(db.kd.len()), uint64(db.kd.bytes())
		s.KeydirCheckpoints = db.st.checkpoints.Load()
	}
	if db.recounting.Load() {
		s.Recounting = 1
	}
	if db.j.rel.on.Load() {
		s.JournalReleasing = 1
	}
	s.JournalDirectBytes = db.j.directBytes.Load()
	return s
}

// ReleaseJournalPages sets whether the journal drops the page cache of
// its frames once they are durable (pagecache.go), and writes the open
// segment with O_DIRECT (journal_direct.go). Call it with true only while
// the caller holds a copy of (nearly) every record it committed since
// Open, so that reads of those frames are rare; with false once they may
// not be. Either way every read is served: a frame not in the page cache
// is read from the device. Off at Open.
func (db *DB) ReleaseJournalPages(on bool) { db.j.rel.on.Store(on) }
