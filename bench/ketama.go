package bench

import (
	"crypto/md5"
	"slices"
	"strconv"
)

// ketama is a consistent-hash continuum compatible with libketama (and with
// libmemcached's MEMCACHED_BEHAVIOR_KETAMA and twemproxy's ketama
// distribution when servers are named host:port): every server gets 160
// points. For i in 0..39 the MD5 digest d of "<host:port>-<i>" yields four
// points, point j being the little-endian uint32 of d[4j:4j+4]. A key maps
// to the first point at or after the little-endian uint32 of the first four
// bytes of MD5(key), wrapping around to the lowest point.
//
// (libmemcached leaves ":11211" out of the point name when a server uses the
// default port; name servers accordingly when matching its placement.)
type ketama struct {
	points  []uint32 // sorted
	servers []int    // servers[i] owns points[i]
}

// pointsPerServer is libketama's count with equal weights: 40 MD5 digests
// of 4 points each.
const pointsPerServer = 160

func newKetama(names []string) *ketama {
	type point struct {
		p      uint32
		server int
	}
	all := make([]point, 0, len(names)*pointsPerServer)
	var buf []byte
	for s, name := range names {
		for i := range pointsPerServer / 4 {
			buf = strconv.AppendInt(append(append(buf[:0], name...), '-'), int64(i), 10)
			d := md5.Sum(buf)
			for j := range 4 {
				all = append(all, point{le32(d[4*j:]), s})
			}
		}
	}
	// Equal points (a 2^-32 chance per pair) are ordered by server index so
	// the placement does not depend on the sort's stability.
	slices.SortFunc(all, func(a, b point) int {
		if a.p != b.p {
			if a.p < b.p {
				return -1
			}
			return 1
		}
		return a.server - b.server
	})
	k := &ketama{points: make([]uint32, len(all)), servers: make([]int, len(all))}
	for i, p := range all {
		k.points[i], k.servers[i] = p.p, p.server
	}
	return k
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// hashKey is the ketama hash of a key.
func hashKey(key []byte) uint32 {
	d := md5.Sum(key)
	return le32(d[:4])
}

// server returns the index (in the names given to newKetama) of the server
// that owns key. It does not allocate.
func (k *ketama) server(key []byte) int {
	h := hashKey(key)
	i, _ := slices.BinarySearch(k.points, h)
	if i == len(k.points) {
		i = 0
	}
	return k.servers[i]
}
