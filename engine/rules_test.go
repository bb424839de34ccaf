package engine

import (
	"reflect"
	"testing"
)

// TestTally checks counters.add against the tally constants: each
// bit counts exactly its own field.
func TestTally(t *testing.T) {
	names := map[tally]string{
		cntCmdGet: "cmdGet", cntGetHits: "getHits", cntGetMisses: "getMisses",
		cntCmdSet: "cmdSet", cntCmdTouch: "cmdTouch", cntTouchHits: "touchHits",
		cntTouchMisses: "touchMisses", cntDeleteHits: "deleteHits",
		cntDeleteMisses: "deleteMisses", cntIncrHits: "incrHits",
		cntIncrMisses: "incrMisses", cntDecrHits: "decrHits",
		cntDecrMisses: "decrMisses", cntCasHits: "casHits",
		cntCasMisses: "casMisses", cntCasBadval: "casBadval",
		cntTotalItems: "totalItems", cntOutOfMemory: "outOfMemory",
		cntTooLarge: "tooLarge",
	}
	if len(names) != nTally {
		t.Fatalf("%d tally constants, %d in the test", nTally, len(names))
	}
	for bit, name := range names {
		var c counters
		c.add(bit)
		v := reflect.ValueOf(c)
		for j := range v.NumField() {
			f, want := v.Type().Field(j).Name, uint64(0)
			if f == name {
				want = 1
			}
			if got := v.Field(j).Uint(); got != want {
				t.Errorf("add(%s): %s = %d, want %d", name, f, got, want)
			}
		}
	}
}
