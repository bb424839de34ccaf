package lsm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Key-space prefixes (doc.go and docs/disk-tier.md).
const (
	prefixData  = 'd' // d epoch(u32) key → record
	prefixIndex = 'k' // k key → epoch(u32)
	prefixLog   = 'l' // l seq(u64) → log entry
	prefixMeta  = 'm' // m name → metadata
	prefixTomb  = 't' // t time(u64) epoch(u32) key → empty (Options.Replicated)
	prefixExp   = 'x' // x exptime(u64) epoch(u32) key → empty
)

func appendDataKey(dst []byte, epoch uint32, key []byte) []byte {
	dst = append(dst, prefixData)
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	return append(dst, key...)
}

// dataPrefix is the start of epoch's d range; dataPrefix(epoch+1) ends it.
func dataPrefix(epoch uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixData}, epoch)
}

func appendIndexKey(dst []byte, key []byte) []byte {
	dst = append(dst, prefixIndex)
	return append(dst, key...)
}

func appendLogKey(dst []byte, seq uint64) []byte {
	dst = append(dst, prefixLog)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func appendExpKey(dst []byte, exptime int64, epoch uint32, key []byte) []byte {
	dst = append(dst, prefixExp)
	dst = binary.BigEndian.AppendUint64(dst, uint64(exptime))
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	return append(dst, key...)
}

// appendTombKey is the tombstone-index key of a tombstone written at unix
// second when: the sweeper removes it once the log head has passed when.
func appendTombKey(dst []byte, when int64, epoch uint32, key []byte) []byte {
	dst = append(dst, prefixTomb)
	dst = binary.BigEndian.AppendUint64(dst, uint64(when))
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	return append(dst, key...)
}

// parseExpKey splits an x key (or a t key: same layout).
func parseExpKey(k []byte) (exptime int64, epoch uint32, key []byte, ok bool) {
	if len(k) < 13 || (k[0] != prefixExp && k[0] != prefixTomb) {
		return 0, 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(k[1:])), binary.BigEndian.Uint32(k[9:]), k[13:], true
}

// parseDataKey splits a d key.
func parseDataKey(k []byte) (epoch uint32, key []byte, ok bool) {
	if len(k) < 5 || k[0] != prefixData {
		return 0, nil, false
	}
	return binary.BigEndian.Uint32(k[1:]), k[5:], true
}

func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }

// Metadata names (m keys).
var (
	metaFormat    = metaKey("format")     // "tcache-lsm" u32 version; written first, checked before any write
	metaNode      = metaKey("node")       // u64 node id
	metaCAS       = metaKey("cas")        // u64 CAS high-water mark
	metaHLC       = metaKey("hlc")        // u64 HLC high-water mark (reserved ahead while running)
	metaFlush     = metaKey("flush")      // FlushMarker
	metaFlushDone = metaKey("flush-done") // i64 OldestLive of the last executed flush
	metaEpochs    = metaKey("epochs")     // epoch table
	metaLogFirst  = metaKey("log-first")  // u64 first sequence number kept
	metaClean     = metaKey("clean")      // 1: closed cleanly (counters exact); 0: open or crashed
	metaClosed    = metaKey("closed")     // 1: closed cleanly (the log lost no tail); 0: open or crashed
	metaHistories = metaKey("histories")  // (id u64, first seq u64) per log history, oldest first
	metaApplied   = metaKey("applied/")   // + peer u64 → history u64, seq u64
	metaIndexed   = metaKey("indexed")    // indexedMarker: how far the journal is indexed (seal.go)
	metaDataPath  = metaKey("datapath")   // "journal" (keydir.go) or "pebble": where the store keeps its records
	metaKeydirKey = metaKey("keydir-key") // k0 k1 (u64 each): the keydir's SipHash key (journal stores)
)

// The data paths a store is written with (metaDataPath).
const (
	dataPathJournal = "journal"
	dataPathPebble  = "pebble"
)

func appliedKey(peer uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), metaApplied...), peer)
}

func encodeHistories(hs []History) []byte {
	b := make([]byte, 0, 16*len(hs))
	for _, h := range hs {
		b = binary.BigEndian.AppendUint64(b, h.ID)
		b = binary.BigEndian.AppendUint64(b, h.FirstSeq)
	}
	return b
}

func decodeHistories(b []byte) ([]History, error) {
	if len(b)%16 != 0 {
		return nil, fmt.Errorf("%w: history list of %d bytes", ErrCorrupt, len(b))
	}
	hs := make([]History, 0, len(b)/16)
	for ; len(b) > 0; b = b[16:] {
		hs = append(hs, History{ID: binary.BigEndian.Uint64(b), FirstSeq: binary.BigEndian.Uint64(b[8:])})
	}
	return hs, nil
}

// formatMagic and formatVersion identify the on-disk layout of this
// package; Open refuses any other.
//
// Version 1 kept every record in Pebble; version 2 adds the journal
// (records in segment files, references in d); version 3 indexes journal
// records by ingested sstables, so that Pebble may lag the journal (the
// indexed marker says by how much; Open re-indexes the rest); version 4
// records the data path (metaDataPath): a journal store keeps no record in
// Pebble, only position entries (s) for its keydir (docs/keydir.md). Open
// upgrades a version 1, 2 or 3 store in place when it keeps its records
// in Pebble; an older tcache refuses a newer store.
const (
	formatMagic             = "tcache-lsm"
	formatVersion           = 4
	formatVersionIndexed    = 3
	formatVersionJournal    = 2
	formatVersionPebbleOnly = 1
	journalDirName          = "journal"
)

func encodeFormat(v uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte(formatMagic), v)
}

func decodeFormat(b []byte) (uint32, error) {
	if len(b) != len(formatMagic)+4 || string(b[:len(formatMagic)]) != formatMagic {
		return 0, fmt.Errorf("unrecognised format marker %q", b)
	}
	return binary.BigEndian.Uint32(b[len(formatMagic):]), nil
}

// Log entries (the value of an l key).
const (
	logFormat    = 1
	logFixedLen  = 1 + 1 + 8 + 8 + 8 // format op time hlc node
	logFlushLen  = 8 + 8             // oldest-live oldest-cas
	logTrailer   = 4                 // CRC-32C
	maxLogKeyLen = 1 << 16
)

// appendLogEntry appends the encoding of e to dst.
func appendLogEntry(dst []byte, e *LogEntry) []byte {
	start := len(dst)
	dst = append(dst, logFormat, byte(e.Op))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Time))
	dst = binary.BigEndian.AppendUint64(dst, e.Version.HLC)
	dst = binary.BigEndian.AppendUint64(dst, e.Version.Node)
	if e.Op == LogFlush {
		dst = binary.BigEndian.AppendUint64(dst, uint64(e.Flush.OldestLive))
		dst = binary.BigEndian.AppendUint64(dst, e.Flush.OldestCAS)
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Key)))
	dst = append(dst, e.Key...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// checkEntry checks an encoded entry (a log or position entry, what) of
// at least min bytes whose last 4 are a CRC-32C of the rest and whose
// first is format; it returns the length without the CRC. Failures wrap
// ErrCorrupt.
func checkEntry(src []byte, min int, format byte, what string) (int, error) {
	if len(src) < min+4 {
		return 0, fmt.Errorf("%w: %s of %d bytes", ErrCorrupt, what, len(src))
	}
	n := len(src) - 4
	if got, want := crc32.Checksum(src[:n], castagnoli), binary.BigEndian.Uint32(src[n:]); got != want {
		return 0, fmt.Errorf("%w: %s checksum %08x, want %08x", ErrCorrupt, what, got, want)
	}
	if src[0] != format {
		return 0, fmt.Errorf("%w: %s format %d", ErrCorrupt, what, src[0])
	}
	return n, nil
}

// decodeLogEntry parses src into e; e.Key aliases src. Failures wrap
// ErrCorrupt.
func decodeLogEntry(src []byte, e *LogEntry) error {
	n, err := checkEntry(src, logFixedLen+1, logFormat, "log entry")
	if err != nil {
		return err
	}
	*e = LogEntry{
		Op:   LogOp(src[1]),
		Time: int64(binary.BigEndian.Uint64(src[2:])),
		Version: Version{
			HLC:  binary.BigEndian.Uint64(src[10:]),
			Node: binary.BigEndian.Uint64(src[18:]),
		},
	}
	p := src[logFixedLen:n]
	switch e.Op {
	case LogPut, LogDelete:
	case LogFlush:
		if len(p) < logFlushLen {
			return fmt.Errorf("%w: short flush log entry", ErrCorrupt)
		}
		e.Flush = FlushMarker{
			OldestLive: int64(binary.BigEndian.Uint64(p)),
			OldestCAS:  binary.BigEndian.Uint64(p[8:]),
			Version:    e.Version,
		}
		p = p[logFlushLen:]
	default:
		return fmt.Errorf("%w: log op %d", ErrCorrupt, e.Op)
	}
	kl, w := binary.Uvarint(p)
	if w <= 0 || kl > maxLogKeyLen || kl != uint64(len(p)-w) {
		return fmt.Errorf("%w: log entry key length", ErrCorrupt)
	}
	if kl > 0 {
		e.Key = p[w:]
	}
	if e.Op == LogFlush && kl != 0 {
		return fmt.Errorf("%w: flush log entry with a key", ErrCorrupt)
	}
	return nil
}

func encodeFlushMarker(m FlushMarker) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(m.OldestLive))
	b = binary.BigEndian.AppendUint64(b, m.OldestCAS)
	b = binary.BigEndian.AppendUint64(b, m.Version.HLC)
	return binary.BigEndian.AppendUint64(b, m.Version.Node)
}

func decodeFlushMarker(b []byte) (FlushMarker, error) {
	if len(b) != 32 {
		return FlushMarker{}, fmt.Errorf("%w: flush marker of %d bytes", ErrCorrupt, len(b))
	}
	return FlushMarker{
		OldestLive: int64(binary.BigEndian.Uint64(b)),
		OldestCAS:  binary.BigEndian.Uint64(b[8:]),
		Version:    Version{HLC: binary.BigEndian.Uint64(b[16:]), Node: binary.BigEndian.Uint64(b[24:])},
	}, nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeU64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: metadata value of %d bytes, want 8", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// epochStat counts the live records of one epoch. Values are signed: while
// counters are rebuilt after a crash they hold deltas.
type epochStat struct {
	items, bytes int64
}

// epochTable is the live epochs [lo, cur] and their counters.
type epochTable struct {
	lo, cur uint32
	stat    []epochStat // stat[e-lo]
}

func (t *epochTable) live(e uint32) bool { return e >= t.lo && e <= t.cur }

func (t *epochTable) at(e uint32) *epochStat { return &t.stat[e-t.lo] }

func (t *epochTable) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, t.lo)
	b = binary.BigEndian.AppendUint32(b, t.cur)
	for _, s := range t.stat {
		b = binary.BigEndian.AppendUint64(b, uint64(s.items))
		b = binary.BigEndian.AppendUint64(b, uint64(s.bytes))
	}
	return b
}

func decodeEpochTable(b []byte) (epochTable, error) {
	var t epochTable
	if len(b) < 8 {
		return t, fmt.Errorf("%w: epoch table of %d bytes", ErrCorrupt, len(b))
	}
	t.lo, t.cur = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
	if t.cur < t.lo || uint64(len(b)-8) != 16*(uint64(t.cur-t.lo)+1) {
		return t, fmt.Errorf("%w: epoch table [%d, %d] in %d bytes", ErrCorrupt, t.lo, t.cur, len(b))
	}
	for p := b[8:]; len(p) > 0; p = p[16:] {
		t.stat = append(t.stat, epochStat{int64(binary.BigEndian.Uint64(p)), int64(binary.BigEndian.Uint64(p[8:]))})
	}
	return t, nil
}
