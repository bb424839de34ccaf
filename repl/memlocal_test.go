package repl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// memLocal is an in-memory Local: a test double of storage. It keeps a map
// of key → (version, record), its own log, histories and applied offsets,
// and applies the conflict rule simply (higher (hlc, node) wins; a flush
// marker drops every older record and refuses older ones later). The link
// logic is what the tests exercise, not this.
//
// A record is: hlc u64, node u64, value. A version compares by hlc, then
// node.
type memLocal struct {
	mu      sync.Mutex
	node    uint64
	data    map[string]memItem // guarded by mu
	flush   memVersion         // newest flush marker
	log     []memLogEntry      // log[i] has seq logFirst+i
	first   uint64             // seq of log[0]
	last    uint64
	hists   []History
	applied map[uint64][2]uint64 // peer → (hist, seq)
	applies int                  // Apply calls with Seq > 0
	dupes   int                  // Apply calls at or below the stored offset
	maxRead uint64               // highest seq ReadLog passed
	histGen uint64

	// applyGate, when set, is received from before each Apply (stalls
	// the puller in tests).
	applyGate chan struct{}

	// changed is LogChanged's channel (nil while nobody waits); write
	// closes it. With deaf set, write never does: every notification is
	// missed, and only a source's fallback wake-up finds new entries.
	changed chan struct{}
	deaf    bool
	waits   int // LogChanged calls
}

type memVersion struct{ hlc, node uint64 }

func (v memVersion) less(w memVersion) bool {
	return v.hlc < w.hlc || v.hlc == w.hlc && v.node < w.node
}

type memItem struct {
	ver     memVersion
	deleted bool
	value   string
}

type memLogEntry struct {
	op  Op
	key string
	ver memVersion
}

func newMemLocal(node uint64) *memLocal {
	m := &memLocal{node: node, data: map[string]memItem{}, first: 1, applied: map[uint64][2]uint64{}}
	m.histGen = node << 8
	m.newHistory()
	return m
}

func (m *memLocal) newHistory() {
	m.histGen++
	m.hists = append(m.hists, History{ID: m.histGen, FirstSeq: m.last + 1})
}

func encodeMemRecord(v memVersion, value string) []byte {
	b := make([]byte, 16, 16+len(value))
	binary.BigEndian.PutUint64(b, v.hlc)
	binary.BigEndian.PutUint64(b[8:], v.node)
	return append(b, value...)
}

func decodeMemRecord(b []byte) (memVersion, string, error) {
	if len(b) < 16 {
		return memVersion{}, "", errors.New("memlocal: short record")
	}
	return memVersion{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, string(b[16:]), nil
}

// write makes a local mutation (a client's write) with version hlc.
func (m *memLocal) write(op Op, key, value string, hlc uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := memVersion{hlc, m.node}
	switch op {
	case OpFlush:
		m.applyFlush(v)
		key = ""
	default:
		m.data[key] = memItem{ver: v, deleted: op == OpDelete, value: value}
	}
	m.log = append(m.log, memLogEntry{op: op, key: key, ver: v})
	m.last++
	if m.changed != nil && !m.deaf {
		close(m.changed)
		m.changed = nil
	}
}

func (m *memLocal) applyFlush(v memVersion) {
	if m.flush.less(v) {
		m.flush = v
	}
	for k, it := range m.data {
		if it.ver.less(m.flush) {
			delete(m.data, k)
		}
	}
}

// crash loses the last lose entries of the log (and the data they wrote)
// and starts a new history, as an open after an unclean shutdown does.
func (m *memLocal) crash(lose int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lose = min(lose, len(m.log))
	for _, e := range m.log[len(m.log)-lose:] {
		if it, ok := m.data[e.key]; ok && it.ver == e.ver {
			delete(m.data, e.key)
		}
	}
	m.log = m.log[:len(m.log)-lose]
	m.last -= uint64(lose)
	m.newHistory()
}

// trim drops the log up to and including seq.
func (m *memLocal) trim(upto uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.first <= upto && len(m.log) > 0 {
		m.log = m.log[1:]
		m.first++
	}
}

func (m *memLocal) NodeID() uint64 { return m.node }

func (m *memLocal) Histories() []History {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]History(nil), m.hists...)
}

func (m *memLocal) LastSeq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

func (m *memLocal) LogChanged() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.waits++
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.changed
}

func (m *memLocal) ReadLog(from uint64, fn func(e Entry) bool) (uint64, error) {
	m.mu.Lock()
	if from < m.first {
		m.mu.Unlock()
		return from - 1, fmt.Errorf("%w: %d below %d", ErrLogTrimmed, from, m.first)
	}
	m.mu.Unlock()
	last := from - 1
	for seq := from; ; seq++ {
		m.mu.Lock()
		if seq > m.last || seq < m.first {
			m.mu.Unlock()
			return last, nil
		}
		le := m.log[seq-m.first]
		e := Entry{Seq: seq, Op: le.op, Key: []byte(le.key), Millis: uint64(time.Now().UnixMilli())}
		if le.op == OpFlush {
			if m.flush == le.ver {
				e.Record = encodeMemRecord(le.ver, "")
			}
		} else if it, ok := m.data[le.key]; ok && it.ver == le.ver {
			e.Record = encodeMemRecord(it.ver, it.value)
		}
		m.maxRead = max(m.maxRead, seq)
		m.mu.Unlock()
		last = seq
		if !fn(e) {
			return last, nil
		}
	}
}

func (m *memLocal) Snapshot(fn func(e Entry) error) (History, uint64, error) {
	m.mu.Lock()
	var es []Entry
	keys := make([]string, 0, len(m.data))
	for k := range m.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		it := m.data[k]
		op := OpPut
		if it.deleted {
			op = OpDelete
		}
		es = append(es, Entry{Op: op, Key: []byte(k), Record: encodeMemRecord(it.ver, it.value)})
	}
	if m.flush != (memVersion{}) {
		es = append(es, Entry{Op: OpFlush, Record: encodeMemRecord(m.flush, "")})
	}
	h, seq := m.hists[len(m.hists)-1], m.last
	m.mu.Unlock()
	for _, e := range es {
		if err := fn(e); err != nil {
			return h, seq, err
		}
	}
	return h, seq, nil
}

func (m *memLocal) Apply(peer, hist uint64, e Entry) error {
	if g := m.gate(); g != nil {
		<-g
	}
	v, value, err := decodeMemRecord(e.Record)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Seq > 0 {
		m.applies++
		if off, ok := m.applied[peer]; ok && off[0] == hist && e.Seq <= off[1] {
			m.dupes++
		}
		m.applied[peer] = [2]uint64{hist, e.Seq}
	}
	switch {
	case e.Op == OpFlush:
		m.applyFlush(v)
	case v.less(m.flush):
	default:
		if cur, ok := m.data[string(e.Key)]; !ok || cur.ver.less(v) {
			m.data[string(e.Key)] = memItem{ver: v, deleted: e.Op == OpDelete, value: value}
		}
	}
	return nil
}

func (m *memLocal) gate() chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyGate
}

func (m *memLocal) SetApplied(peer, hist, seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied[peer] = [2]uint64{hist, seq}
	return nil
}

func (m *memLocal) Applied(peer uint64) (uint64, uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	off, ok := m.applied[peer]
	return off[0], off[1], ok
}

// dump lists the live items, with their versions named by names.
func (m *memLocal) dump(names map[uint64]string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.data))
	for k := range m.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		it := m.data[k]
		if it.deleted {
			fmt.Fprintf(&b, " %s=<deleted@%d%s>", k, it.ver.hlc, names[it.ver.node])
		} else {
			fmt.Fprintf(&b, " %s=%s@%d%s", k, it.value, it.ver.hlc, names[it.ver.node])
		}
	}
	if m.flush != (memVersion{}) {
		fmt.Fprintf(&b, " flush@%d%s", m.flush.hlc, names[m.flush.node])
	}
	return b.String()
}
