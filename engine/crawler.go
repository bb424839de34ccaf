package engine

import (
	"time"

	"github.com/tcache/tcache/internal/pace"
)

// crawlBatch is the number of records the crawler examines per lock hold.
const crawlBatch = 256

func (e *Engine) crawlLoop(every time.Duration) {
	defer close(e.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.Crawl()
		}
	}
}

// Crawl makes one crawler pass: it walks every ring of every shard from head
// to tail, crawlBatch records per lock hold, and unlinks the items that are
// expired or flushed, counting crawler_reclaimed (and expired_unfetched for
// expired items never fetched), as memcached's LRU crawler does. Tests call
// it directly; the background crawler calls it every CrawlerInterval.
//
// A ring is walked only when it may hold something to reclaim
// (ring.reclaim): a record with an expiry time was written or moved to it
// or found live in it by its last walk, or a record was stored flushed;
// or when a flush_all took effect since its last walk. With no
// expiry times and no flush a pass costs nothing, where walking every
// record header of a full 1 GiB RAM tier took 30 ms of CPU a second;
// memcached's crawler likewise schedules itself by what its last crawl
// found.
//
// A pass over a full RAM tier reads every record's header: about 30 ms for
// 1 GiB of records (BenchmarkCrawl). It is paced between batches (internal/pace):
// unpaced, under one P (-t 1), each pass kept the connections' requests
// unread for up to 10 ms at a time, sysmon's poll of the network.
func (e *Engine) Crawl() {
	var pc pace.Pacer
	for i := range e.shards {
		s := &e.shards[i]
		for ri := range 2 {
			s.mu.Lock()
			if s.mu.index.slots == nil { // closed
				s.mu.Unlock()
				return
			}
			r := s.ringByIndex(ri)
			fm, inEffect := e.flushMark(e.now())
			if !r.reclaim && (!inEffect || fm == s.mu.crawled[ri]) {
				s.mu.Unlock()
				continue
			}
			// Set again by the walk when it meets a live record with an
			// expiry time, and by writes meanwhile.
			r.reclaim = false
			end := r.tail
			s.mu.crawl[ri] = 0
			s.mu.Unlock()
			for {
				now := e.now()
				s.mu.Lock()
				done := s.mu.index.slots == nil || s.crawl(e, ri, end, now)
				if done && inEffect {
					s.mu.crawled[ri] = fm
				}
				s.mu.Unlock()
				pc.Step(crawlBatch)
				if done {
					break
				}
			}
		}
	}
}

func (s *shard) ringByIndex(ri int) *ring {
	if ri == 0 {
		return &s.mu.small
	}
	return &s.mu.main
}

// crawl examines up to crawlBatch records of ring ri from the crawler's
// cursor and reports whether it reached end (or the tail).
func (s *shard) crawl(e *Engine, ri int, end uint64, now int64) bool {
	r := s.ringByIndex(ri)
	cur := max(s.mu.crawl[ri], r.head)
	stop := min(end, r.tail)
	var it item
	it.r = r
	for k := 0; k < crawlBatch && cur < stop; k++ {
		it.pos = cur
		r.readHeader(cur, &it.hdr)
		cur += it.hdr.size()
		if it.hdr.bits&bitDead != 0 {
			continue
		}
		s.mu.c.crawlerChecked++
		fl := e.flushed(&it.hdr, now)
		if !fl && (it.hdr.exptime == 0 || int64(it.hdr.exptime) > now) {
			if it.hdr.exptime != 0 {
				r.reclaim = true // not yet expired: a later pass reclaims it
			}
			continue
		}
		it.h = s.hashAt(e, r, it.pos, &it.hdr)
		if !s.indexed(&it) {
			continue
		}
		s.unlink(&it)
		s.mu.c.crawlerReclaimed++
		if !fl && it.hdr.bits&bitFetched == 0 {
			s.mu.c.expiredUnfetched++
		}
	}
	s.mu.crawl[ri] = cur
	return cur >= stop
}
