package repl

import "testing"

func TestDecidePull(t *testing.T) {
	// Histories: 10 holds seqs 1..7, 11 holds 8..19, 12 holds 20.. (last 25).
	hs := []History{{ID: 10, FirstSeq: 1}, {ID: 11, FirstSeq: 8}, {ID: 12, FirstSeq: 20}}
	tests := []struct {
		name       string
		hists      []History
		last       uint64
		hist, from uint64
		stream     bool
	}{
		{"fresh puller", hs, 25, 0, 1, true},
		{"fresh puller, unknown history id", hs, 25, 99, 1, true},
		{"fresh puller, empty log", []History{{1, 1}}, 0, 0, 1, true},
		{"pull from 0", hs, 25, 0, 0, false},
		{"mid current history", hs, 25, 12, 23, true},
		{"caught up", hs, 25, 12, 26, true},
		{"beyond our last seq", hs, 25, 12, 27, false},
		{"mid old history", hs, 25, 10, 5, true},
		{"at end of old history", hs, 25, 10, 8, true},
		{"past end of old history (tail lost)", hs, 25, 10, 9, false},
		{"end of middle history", hs, 25, 11, 20, true},
		{"past end of middle history", hs, 25, 11, 21, false},
		{"resync point just before a history", hs, 25, 12, 20, true},
		{"before its history began", hs, 25, 12, 19, false},
		{"unknown history", hs, 25, 99, 5, false},
		{"no history but applied", hs, 25, 0, 5, false},
		{"single history", []History{{1, 1}}, 3, 1, 4, true},
	}
	for _, tt := range tests {
		d := decidePull(tt.hists, tt.last, tt.hist, tt.from)
		if d.stream != tt.stream {
			t.Errorf("%s: stream %v (%s), want %v", tt.name, d.stream, d.reason, tt.stream)
		}
		if !d.stream && d.reason == "" {
			t.Errorf("%s: resync without a reason", tt.name)
		}
	}
}

func TestHistoriesFromAndOf(t *testing.T) {
	hs := []History{{ID: 10, FirstSeq: 1}, {ID: 11, FirstSeq: 8}, {ID: 12, FirstSeq: 20}}
	for _, tt := range []struct {
		from  uint64
		first uint64
	}{{1, 10}, {7, 10}, {8, 11}, {19, 11}, {20, 12}, {99, 12}} {
		got := historiesFrom(hs, tt.from)
		if got[0].ID != tt.first {
			t.Errorf("historiesFrom(%d) starts with %d, want %d", tt.from, got[0].ID, tt.first)
		}
		if id := historyOf(got, tt.from); id != tt.first {
			t.Errorf("historyOf(%d) = %d, want %d", tt.from, id, tt.first)
		}
	}
	if id := historyOf(hs, 25); id != 12 {
		t.Errorf("historyOf(25) = %d", id)
	}
}
