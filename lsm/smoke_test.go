package lsm

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

func TestSmoke(t *testing.T) {
	fs := vfs.NewMem()
	clk := clock.NewFake(testStart)
	db := mustOpen(t, testOptions(fs, clk))
	put(t, db, "a", "hello", 0, 1)
	put(t, db, "b", string(make([]byte, 4000)), 0, 2)
	put(t, db, "a", "world", 0, 3)
	if v, ok := get(t, db, "a"); !ok || v != "world" {
		t.Fatalf("a = %q %v", v, ok)
	}
	st := db.Stats()
	if st.Items != 2 || st.LogLast != 3 {
		t.Fatalf("stats %+v", st)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpen(t, testOptions(fs, clk))
	defer db.Close()
	if v, ok := get(t, db, "b"); !ok || len(v) != 4000 {
		t.Fatalf("b = %d %v", len(v), ok)
	}
	if st := db.Stats(); st.Items != 2 || st.LogLast != 3 || st.Recounting != 0 {
		t.Fatalf("stats after reopen %+v", st)
	}
}
