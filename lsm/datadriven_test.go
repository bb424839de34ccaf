package lsm

// Data-driven tests: every file under testdata/db/ is a script run against a
// DB on a crashable in-memory filesystem with a fake clock and no
// background goroutines. Regenerate expected output with
//
//	go test ./lsm -run TestDataDriven -rewrite
//
// Directives:
//
//	open [mode=cache|persistent] [durability=sync(default)|interval|none] [limit=BYTES] [codec=s2|zstd|none]
//	put key=K [ttl=SECONDS] [flags=N] [cas=N] [size=N] [prev=unknown]   value: the input block, or size=N random bytes
//	get key=K            the record, or "miss"
//	delete key=K [prev=unknown]
//	flush [delay=SECONDS]
//	advance SECONDS      move the fake clock
//	maintain             one maintenance pass
//	stats                the disk figures that are deterministic
//	reopen               Close and Open
//	crash                a crash: Open a clone holding only what was synced
//	log [from=N]         the log entries
//	keys                 the number of keys in each key space
//	fill prefix=P count=N size=S   put P0..P<N-1>, S bytes each
//	count prefix=P count=N [check] how many of P0..P<N-1> are found (check: whether some
//	                               were dropped and the item counter equals the found ones)
//	usage                whether the disk usage (less spare WAL files) is within the limit + 1/4
//
// open starts on a new, empty filesystem; stats waits for a recount.
//
// The harness keeps each key's Location like the engine does and passes it
// back as prev (prev=unknown passes the zero Location instead).

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata/db", func(t *testing.T, path string) {
		clk := clock.NewFake(testStart)
		fs := vfs.NewCrashableMem()
		opts := testOptions(fs, clk)
		var db *DB
		where := map[string]Location{}
		hlc := uint64(0)
		defer func() {
			if db != nil {
				_ = db.Close()
			}
		}()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			arg := func(name string) (string, bool) {
				for _, a := range d.CmdArgs {
					if a.Key == name && len(a.Vals) > 0 {
						return a.Vals[0], true
					}
					if a.Key == name {
						return "", true
					}
				}
				return "", false
			}
			num := func(name string) int64 {
				s, ok := arg(name)
				if !ok {
					return 0
				}
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return n
			}
			now := func() int64 { return clk.Now().Unix() }
			prevOf := func(key string) Location {
				if v, _ := arg("prev"); v == "unknown" {
					return Location{}
				}
				return where[key]
			}
			switch d.Cmd {
			case "open":
				if db != nil {
					_ = db.Close()
				}
				fs = vfs.NewCrashableMem()
				opts = testOptions(fs, clk)
				opts.Durability = DurabilitySync
				opts.JournalMin = -1 // these scripts count Pebble's d, k and x: a Pebble store
				if v, ok := arg("mode"); ok && v == "persistent" {
					opts.Mode = ModePersistent
				}
				if v, ok := arg("durability"); ok {
					opts.Durability = map[string]Durability{"sync": DurabilitySync, "interval": DurabilityInterval, "none": DurabilityNone}[v]
				}
				if n := num("limit"); n > 0 {
					opts.DiskLimit = n
					opts.MemTableSize = minMemTableSize
				}
				if v, ok := arg("codec"); ok {
					switch v {
					case "zstd":
						opts.Codec = CodecZstd
					case "none":
						opts.CompressMin = -1
					}
				}
				var err error
				db, err = Open(opts)
				if err != nil {
					return "error: " + err.Error()
				}
				where = map[string]Location{}
				return "ok"
			case "reopen", "crash":
				if d.Cmd == "reopen" {
					if err := db.Close(); err != nil {
						return "close error: " + err.Error()
					}
				} else {
					crashed := fs.CrashClone(vfs.CrashCloneCfg{})
					_ = db.Close()
					fs = crashed
					opts.FS = fs
				}
				var err error
				db, err = Open(opts)
				if err != nil {
					db = nil
					return "error: " + err.Error()
				}
				where = map[string]Location{}
				return "ok"
			case "put":
				key, _ := arg("key")
				value := []byte(d.Input)
				if n := num("size"); n > 0 {
					value = randomValue(key, int(n))
				}
				hlc++
				rec := Record{Value: value, Flags: uint32(num("flags")), CAS: uint64(num("cas")), Time: now(),
					Version: Version{HLC: hlc, Node: 7}}
				if ttl := num("ttl"); ttl != 0 {
					rec.Exptime = now() + ttl
				}
				b := db.NewBatch()
				b.Put([]byte(key), &rec, prevOf(key))
				if err := db.Commit(b); err != nil {
					return "error: " + err.Error()
				}
				where[key] = rec.Where
				return "ok"
			case "delete":
				key, _ := arg("key")
				hlc++
				b := db.NewBatch()
				b.Delete([]byte(key), Version{HLC: hlc, Node: 7}, prevOf(key))
				if err := db.Commit(b); err != nil {
					return "error: " + err.Error()
				}
				where[key] = Location{Known: true}
				return "ok"
			case "get":
				key, _ := arg("key")
				r, err := db.Get(nil, []byte(key))
				if err != nil {
					return "error: " + err.Error()
				}
				if !r.Found {
					return "miss"
				}
				where[key] = r.Where
				v := string(r.Value)
				if len(v) > 40 {
					v = fmt.Sprintf("%d bytes", len(v))
				} else {
					v = strconv.Quote(v)
				}
				exp := "never"
				if r.Exptime != 0 {
					exp = fmt.Sprintf("now%+d", r.Exptime-now())
				}
				return fmt.Sprintf("%s flags=%d cas=%d exptime=%s time=now%+d version=%d/%d", v, r.Flags, r.CAS, exp,
					r.Time-now(), r.Version.HLC, r.Version.Node)
			case "flush":
				hlc++
				b := db.NewBatch()
				b.Flush(FlushMarker{OldestLive: now() + num("delay"), Version: Version{HLC: hlc, Node: 7}})
				if err := db.Commit(b); err != nil {
					return "error: " + err.Error()
				}
				m := db.FlushMarker()
				return fmt.Sprintf("marker oldest_live=now%+d", m.OldestLive-now())
			case "advance":
				n, err := strconv.Atoi(d.CmdArgs[0].Key)
				if err != nil {
					t.Fatal(err)
				}
				clk.Advance(timeSeconds(n))
				return ""
			case "maintain":
				db.Maintain()
				return ""
			case "fill":
				prefix, _ := arg("prefix")
				for i := range num("count") {
					hlc++
					rec := Record{Value: randomValue(prefix, int(num("size"))), Time: now(), Version: Version{HLC: hlc, Node: 7}}
					key := fmt.Sprintf("%s%d", prefix, i)
					b := db.NewBatch()
					b.Put([]byte(key), &rec, where[key])
					if err := db.Commit(b); err != nil {
						return fmt.Sprintf("error at %d: %v", i, err)
					}
					where[key] = rec.Where
				}
				return "ok"
			case "count":
				prefix, _ := arg("prefix")
				found := 0
				for i := range num("count") {
					if r, err := db.Get(nil, fmt.Appendf(nil, "%s%d", prefix, i)); err == nil && r.Found {
						found++
					}
				}
				if _, ok := arg("check"); ok {
					// Nondeterministic amounts (cache drops): only the invariants.
					return fmt.Sprintf("some dropped: %v, counters exact: %v", found < int(num("count")), uint64(found) == db.Stats().Items)
				}
				return fmt.Sprintf("%d found", found)
			case "usage":
				s := db.Stats()
				return fmt.Sprintf("near the limit: %v", db.dataUsage() <= int64(s.LimitBytes)*5/4)
			case "stats":
				for i := 0; i < 1000 && db.recounting.Load(); i++ {
					time.Sleep(time.Millisecond)
				}
				s := db.Stats()
				return fmt.Sprintf("items=%d item_bytes=%d epochs=%d log=[%d,%d] writes=%d reads=%d swept=%d drops=%d dropped_items=%d disk_full=%d badcrc=%d recounting=%d",
					s.Items, s.ItemBytes, s.Epochs, s.LogFirst, s.LogLast, s.Writes, s.Reads, s.Swept, s.Drops, s.DroppedItems, s.DiskFull, s.BadCRC, s.Recounting)
			case "log":
				var out strings.Builder
				err := db.ReadLog(uint64(max(num("from"), 1)), func(seq uint64, e LogEntry) bool {
					fmt.Fprintf(&out, "%d %s", seq, map[LogOp]string{LogPut: "put", LogDelete: "delete", LogFlush: "flush"}[e.Op])
					if e.Op == LogFlush {
						fmt.Fprintf(&out, " oldest_live=now%+d", e.Flush.OldestLive-now())
					} else {
						fmt.Fprintf(&out, " %q", e.Key)
					}
					fmt.Fprintf(&out, " version=%d\n", e.Version.HLC)
					return true
				})
				if err != nil {
					fmt.Fprintf(&out, "error: %v\n", err)
				}
				return out.String()
			case "keys":
				counts := map[byte]int{}
				it, _ := db.pdb.NewIter(&pebble.IterOptions{})
				for ok := it.First(); ok; ok = it.Next() {
					counts[it.Key()[0]]++
				}
				_ = it.Close()
				return fmt.Sprintf("d=%d k=%d x=%d l=%d", counts['d'], counts['k'], counts['x'], counts['l'])
			}
			t.Fatalf("unknown directive %q", d.Cmd)
			return ""
		})
	})
}
