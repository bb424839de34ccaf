package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// client is one connection: one goroutine sends requests (up to Pipeline in
// flight), reads the replies in order and records them. Everything it
// touches per request is preallocated here.
type client struct {
	o      *Options
	wire   wireProto
	conn   net.Conn
	br     *bufio.Reader
	out    []byte // requests encoded since the last write
	server int    // index of the server this connection talks to
	ring   *ketama

	sched              ratioSchedule
	setKeys, getKeys   keyGen
	rng                *rand.Rand
	keys               keyList
	value              []byte // CompressibleData: DataSizeMax bytes, sets send a prefix; else the shared random pool
	multi              int    // keys per get
	budget             int64  // requests left to send; <0 = until stop
	clock              time.Time
	deadlineRenewedAt  int64
	inflight           []pending // ring of Pipeline entries
	head, tail, queued int

	counts  counters
	setHist *hdrhistogram.Histogram
	getHist *hdrhistogram.Histogram
}

// pending is a request in flight.
type pending struct {
	sentAt int64 // nanoseconds since clock
	keys   int32 // 0 for a set, the key count for a get
	bytes  int32 // request bytes
}

// counters are updated by the client and read by the progress reporter.
type counters struct {
	sets, gets, hits, misses atomic.Int64
	setBytes, getBytes       atomic.Int64 // request + reply bytes
	latencyNanos             atomic.Int64 // sum over all replies
	serverErrors             atomic.Int64
	_                        [64]byte // keep neighbours' counters off this cache line
}

// newClient sets up connection index of total to one server. values is the
// run's pool of random value bytes (randomValues; read-only, shared by
// every connection), unused with o.CompressibleData.
func newClient(o *Options, conn net.Conn, server int, ring *ketama, index, total int, clock time.Time, values []byte) *client {
	seed := o.Seed
	if o.DistinctClientSeed {
		seed += uint64(index) * 0x9e3779b97f4a7c15
	}
	rng := rand.New(rand.NewPCG(seed, seed^0xda3e39cb94b95bdb))
	c := &client{
		o:        o,
		wire:     wireOf(o.Protocol),
		conn:     conn,
		br:       bufio.NewReaderSize(conn, 64<<10),
		out:      make([]byte, 0, 64<<10),
		server:   server,
		ring:     ring,
		sched:    newRatioSchedule(o.SetRatio, o.GetRatio),
		rng:      rng,
		value:    values,
		multi:    max(o.MultiKeyGet, 1),
		budget:   -1,
		clock:    clock,
		inflight: make([]pending, o.Pipeline),
		setHist:  newHistogram(),
		getHist:  newHistogram(),
	}
	c.setKeys = newKeyGen(o.SetPattern, o, rng, index, total)
	c.getKeys = newKeyGen(o.GetPattern, o, rng, index, total)
	if o.Requests > 0 {
		c.budget = o.Requests
	}
	if o.CompressibleData || len(values) < o.DataSizeMax {
		c.value = make([]byte, o.DataSizeMax)
		for i := range c.value {
			c.value[i] = 'a' + byte(i%26)
		}
	}
	c.keys.buf = make([]byte, 0, c.multi*(len(o.KeyPrefix)+20))
	c.keys.ends = make([]int, 0, c.multi)
	return c
}

func (c *client) now() int64 { return int64(time.Since(c.clock)) }

// nextKey adds the next key of gen that belongs to this connection's server
// (with several servers, keys of other servers are skipped: each connection
// sees its pattern restricted to its server's share of the key space).
func (c *client) nextKey(gen keyGen) {
	for {
		k := c.keys.add(c.o.KeyPrefix, gen.Next())
		if c.ring == nil || c.ring.server(k) == c.server {
			return
		}
		c.keys.drop()
	}
}

// encode appends the next request to c.out and queues it.
func (c *client) encode(now int64) {
	start := len(c.out)
	c.keys.reset()
	p := pending{sentAt: now}
	if c.sched.nextIsSet() {
		c.nextKey(c.setKeys)
		size := c.o.DataSizeMin
		if c.o.DataSizeMax > size {
			size += c.rng.IntN(c.o.DataSizeMax - size + 1)
		}
		exp := c.o.ExpiryMin
		if c.o.ExpiryMax > exp {
			exp += c.rng.IntN(c.o.ExpiryMax - exp + 1)
		}
		off := 0
		if !c.o.CompressibleData {
			off = c.rng.IntN(len(c.value) - size + 1)
		}
		c.out = appendSet(c.out, c.wire, c.keys.key(0), c.value[off:off+size], exp)
	} else {
		for range c.multi {
			c.nextKey(c.getKeys)
		}
		c.out = appendGet(c.out, c.wire, &c.keys)
		p.keys = int32(c.multi)
	}
	p.bytes = int32(len(c.out) - start)
	c.inflight[c.tail] = p
	c.tail++
	if c.tail == len(c.inflight) {
		c.tail = 0
	}
	c.queued++
	if c.budget > 0 {
		c.budget--
	}
}

// run drives the connection until its request budget is spent or stop is
// set, and every request sent has been answered.
func (c *client) run(stop *atomic.Bool) error {
	for {
		// Refill the window only when every reply that has arrived is
		// handled, so that a pipeline costs one write, not one per request.
		if c.br.Buffered() == 0 && c.queued < len(c.inflight) && c.budget != 0 && !stop.Load() {
			now := c.now()
			for c.queued < len(c.inflight) && c.budget != 0 {
				c.encode(now)
			}
			if now-c.deadlineRenewedAt > int64(time.Second) {
				if err := c.conn.SetDeadline(c.clock.Add(time.Duration(now) + c.o.IOTimeout)); err != nil {
					return err
				}
				c.deadlineRenewedAt = now
			}
			if _, err := c.conn.Write(c.out); err != nil {
				return err
			}
			c.out = c.out[:0]
		}
		if c.queued == 0 {
			return nil
		}
		if err := c.readReply(); err != nil {
			return err
		}
	}
}

// readReply reads and records the reply to the oldest request in flight.
func (c *client) readReply() error {
	p := c.inflight[c.head]
	var n int
	var err error
	if p.keys == 0 {
		n, err = c.readSet()
	} else {
		n, err = c.readGet(int(p.keys))
	}
	if err != nil {
		return err
	}
	lat := c.now() - p.sentAt
	c.counts.latencyNanos.Add(lat)
	if p.keys == 0 {
		recordMicros(c.setHist, lat)
		c.counts.sets.Add(1)
		c.counts.setBytes.Add(int64(n) + int64(p.bytes))
	} else {
		recordMicros(c.getHist, lat)
		c.counts.gets.Add(1)
		c.counts.getBytes.Add(int64(n) + int64(p.bytes))
	}
	c.head++
	if c.head == len(c.inflight) {
		c.head = 0
	}
	c.queued--
	return nil
}

func (c *client) readSet() (int, error) {
	n, err := readSetReply(c.br, c.wire)
	if errors.Is(err, ErrServer) {
		c.counts.serverErrors.Add(1)
		err = nil
	}
	return n, err
}

func (c *client) readGet(keys int) (int, error) {
	hits, n, err := readGetReply(c.br, c.wire, keys)
	if errors.Is(err, ErrServer) {
		c.counts.serverErrors.Add(1)
		return n, nil // counted as neither hit nor miss
	}
	if err != nil {
		return n, err
	}
	c.counts.hits.Add(int64(hits))
	c.counts.misses.Add(int64(keys - hits))
	return n, nil
}

// randomValues is the pool that sets slice their values from unless
// o.CompressibleData: max(8 MiB, 8 × DataSizeMax) random bytes from a
// ChaCha8 stream seeded with o.Seed, filled once per run and only read
// afterwards, so the request path allocates nothing. A value is the pool's
// bytes at a random offset: no compressor finds redundancy within a value,
// and two values in one disk block overlap with a probability of about
// 2 × size / pool (0.05% for 2 KiB values).
func randomValues(o *Options) []byte {
	if o.CompressibleData {
		return nil
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], o.Seed)
	copy(seed[8:], "tcache bench values")
	b := make([]byte, max(8<<20, 8*o.DataSizeMax))
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}
