package bench

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math"
	"testing"
)

// The reference placements below were computed from the ketama spec with an
// independent implementation (Python's hashlib and bisect): points are the
// four little-endian uint32s of MD5("<server>-<i>") for i in 0..39, a key
// hashes to the little-endian uint32 of MD5(key)[0:4] and goes to the first
// point at or above it, wrapping.
func TestKetamaKnownPlacements(t *testing.T) {
	servers := []string{"10.0.1.1:11211", "10.0.1.2:11211", "10.0.1.3:11211"}
	k := newKetama(servers)
	if len(k.points) != 3*160 {
		t.Fatalf("%d points, want 480", len(k.points))
	}
	// Lowest and highest points of the continuum.
	if k.points[0] != 4826654 || k.servers[0] != 1 {
		t.Errorf("first point %d of server %d, want 4826654 of server 1", k.points[0], k.servers[0])
	}
	if last := len(k.points) - 1; k.points[last] != 4284233799 || k.servers[last] != 1 {
		t.Errorf("last point %d of server %d, want 4284233799 of server 1", k.points[last], k.servers[last])
	}
	for _, tc := range []struct {
		key    string
		hash   uint32
		server int
	}{
		{"memtier-0", 1742335921, 2},
		{"memtier-1", 2412726520, 0},
		{"memtier-42", 4042042690, 0},
		{"memtier-99999", 3767482726, 2},
		{"hello", 708854109, 2},
		{"key:0000001", 3977527064, 0},
		{"a", 3111502092, 2},
		{"zzz", 1807264755, 2},
	} {
		if h := hashKey([]byte(tc.key)); h != tc.hash {
			t.Errorf("hash(%q) = %d, want %d", tc.key, h, tc.hash)
		}
		if s := k.server([]byte(tc.key)); s != tc.server {
			t.Errorf("server(%q) = %s, want %s", tc.key, servers[s], servers[tc.server])
		}
	}
}

func TestKetamaPointsFollowSpec(t *testing.T) {
	// Recompute one server's 160 points straight from the spec.
	k := newKetama([]string{"127.0.0.1:11211"})
	want := map[uint32]bool{}
	for i := range 40 {
		d := md5.Sum(fmt.Appendf(nil, "127.0.0.1:11211-%d", i))
		for j := range 4 {
			want[binary.LittleEndian.Uint32(d[4*j:])] = true
		}
	}
	for _, p := range k.points {
		if !want[p] {
			t.Fatalf("point %d is not derived from the spec", p)
		}
	}
	if len(want) != len(k.points) {
		t.Fatalf("%d points, want %d", len(k.points), len(want))
	}
}

func keyNames(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "memtier-%d", i)
	}
	return keys
}

func TestKetamaBalanceAndMinimalMovement(t *testing.T) {
	servers := []string{"10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211", "10.0.0.4:11211"}
	keys := keyNames(100_000)
	before := newKetama(servers)
	counts := make([]int, len(servers))
	owner := make([]int, len(keys))
	for i, key := range keys {
		owner[i] = before.server(key)
		counts[owner[i]]++
	}
	// 160 points per server keep every share within ±20% of the mean.
	mean := float64(len(keys)) / float64(len(servers))
	for s, c := range counts {
		if math.Abs(float64(c)-mean) > 0.2*mean {
			t.Errorf("%s holds %d keys, want %0.f ± 20%%", servers[s], c, mean)
		}
	}

	// Adding a fifth server moves only keys to it, about a fifth of them.
	after := newKetama(append(servers, "10.0.0.5:11211"))
	moved := 0
	for i, key := range keys {
		s := after.server(key)
		if s == owner[i] {
			continue
		}
		if s != 4 {
			t.Fatalf("key %s moved from %s to %s, not to the new server", key, servers[owner[i]], servers[s])
		}
		moved++
	}
	if f := float64(moved) / float64(len(keys)); f < 0.12 || f > 0.28 {
		t.Errorf("%.3f of keys moved to the new server, want about 0.2", f)
	}
}
