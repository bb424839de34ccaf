package protocol

// The `lru_crawler` command, as memcached 1.6.18 answers it
// (process_lru_crawler_command). tcache has no crawler thread to start or
// stop: expired items are reclaimed lazily and by the disk tier's sweeper,
// so `crawl`, `sleep` and `tocrawl` are accepted and do nothing. `metadump`
// is real: it walks the engine (every item on disk with a disk tier, the RAM
// tier in memory mode) and writes memcached's line per item, so that
// memcached-tool style dumps work and two replicated nodes can be compared.

import (
	"strconv"

	"github.com/tcache/tcache/engine"
)

var (
	replyBadClass         = []byte("BADCLASS invalid class id\r\n")
	replyCrawlerDisabled  = []byte("CLIENT_ERROR lru crawler disabled\r\n")
	replyCrawlerNoStart   = []byte("ERROR failed to start lru crawler thread\r\n")
	replyBadLineFormat    = []byte("CLIENT_ERROR bad command line format\r\n")
	replySleepTooLong     = []byte("CLIENT_ERROR sleep must be one second or less\r\n")
	replyDumpError        = []byte("SERVER_ERROR disk read failed\r\n")
	replyDumpNotSupported = []byte("SERVER_ERROR metadump not supported\r\n")
	replyDumpPipelined    = []byte("ERROR cannot pipeline other commands before metadump\r\n")
)

// crawlerClass is the one pseudo slab class tcache reports (items:1:* in
// `stats items`); memcached accepts class ids 1..63.
const (
	crawlerClass    = 1
	crawlerMaxClass = 63
)

// dumper is implemented by engines that can enumerate their items
// (*engine.Engine).
type dumper interface {
	Dump(fn func(it *engine.DumpItem) bool) error
}

// serveLRUCrawler answers lru_crawler <subcommand> ... (nt counts the
// tokens plus memcached's empty terminal one).
func (c *conn) serveLRUCrawler(nt int) error {
	if nt < 3 {
		c.w.Write(replyError)
		return nil
	}
	s := c.srv
	sub := string(c.tok[1])
	switch {
	case nt == 4 && sub == "crawl":
		if s.crawlerOff.Load() {
			c.w.Write(replyCrawlerDisabled)
			return nil
		}
		if _, ok := parseClassList(c.tok[2]); !ok {
			c.w.Write(replyBadClass)
			return nil
		}
		c.w.Write(replyOK)
	case nt == 4 && sub == "metadump":
		if s.crawlerOff.Load() {
			c.w.Write(replyCrawlerDisabled)
			return nil
		}
		// memcached refuses a dump behind replies not yet sent (its dump
		// takes the connection over); replies are flushed only when the
		// read buffer is drained, so pending ones mean a pipeline.
		if c.w.Buffered() > 0 {
			c.w.Write(replyDumpPipelined)
			return nil
		}
		ours := true
		if string(c.tok[2]) != "hash" {
			var ok bool
			if ours, ok = parseClassList(c.tok[2]); !ok {
				c.w.Write(replyBadClass)
				return nil
			}
		}
		return c.metadump(ours)
	case nt == 4 && sub == "tocrawl":
		if _, ok := parseUint32(c.tok[2]); !ok {
			c.w.Write(replyBadLineFormat)
			return nil
		}
		c.w.Write(replyOK)
	case nt == 4 && sub == "sleep":
		n, ok := parseUint32(c.tok[2])
		switch {
		case !ok:
			c.w.Write(replyBadLineFormat)
		case n > 1000000:
			c.w.Write(replySleepTooLong)
		default:
			c.w.Write(replyOK)
		}
	case nt == 3 && sub == "enable":
		// memcached answers this when its crawler thread is already running.
		if !s.crawlerOff.CompareAndSwap(true, false) {
			c.w.Write(replyCrawlerNoStart)
			return nil
		}
		c.w.Write(replyOK)
	case nt == 3 && sub == "disable":
		s.crawlerOff.Store(true)
		c.w.Write(replyOK)
	default:
		c.w.Write(replyError)
	}
	return nil
}

// parseClassList reads "all" or a comma-separated list of class ids, as
// memcached does; ours reports whether it names tcache's one class.
func parseClassList(b []byte) (ours, ok bool) {
	if string(b) == "all" {
		return true, true
	}
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != ',' {
			i++
		}
		n, ok := parseUint32(b[:i])
		if !ok || n < 1 || n > crawlerMaxClass {
			return false, false
		}
		ours = ours || n == crawlerClass
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return ours, true
}

// metadump writes one line per live item, then END:
//
//	key=<url-encoded> exp=<-1|unix> la=<unix> cas=<n> fetch=<yes|no> cls=1 size=<item size>\n
//
// Lines end with a bare "\n" and the last line "END\r\n", byte for byte as
// memcached 1.6.18. Keys are percent-encoded like memcached's uriencode
// (everything but letters, digits and -._~); a binary meta key is written
// decoded, as memcached does. Writes go through the buffered writer, which
// flushes as it fills, so a large dump never sits in memory.
func (c *conn) metadump(ours bool) error {
	if ours {
		d, ok := c.srv.eng.(dumper)
		if !ok {
			c.w.Write(replyDumpNotSupported)
			return nil
		}
		var werr error
		err := d.Dump(func(it *engine.DumpItem) bool {
			b := append(c.line[:0], "key="...)
			b = appendURIEncoded(b, it.Key)
			b = append(b, " exp="...)
			if it.Exptime == 0 {
				b = append(b, "-1"...)
			} else {
				b = strconv.AppendInt(b, it.Exptime, 10)
			}
			b = append(b, " la="...)
			b = strconv.AppendInt(b, it.LastAccess, 10)
			b = append(b, " cas="...)
			b = strconv.AppendUint(b, it.CAS, 10)
			b = append(b, " fetch="...)
			b = append(b, yesNo(it.Fetched)...)
			b = append(b, " cls="...)
			b = strconv.AppendInt(b, crawlerClass, 10)
			b = append(b, " size="...)
			b = strconv.AppendInt(b, int64(it.ItemSize), 10)
			b = append(b, '\n')
			c.line = b
			_, werr = c.w.Write(b)
			return werr == nil
		})
		if werr != nil {
			return werr // the client went away: close the connection
		}
		if err != nil {
			c.srv.log.Error("lru_crawler metadump: reading items", "err", err)
			c.w.Write(replyDumpError)
			return nil
		}
	}
	c.w.Write(replyEnd)
	return nil
}

// appendURIEncoded appends key percent-encoded as memcached's uriencode
// does: unreserved characters (RFC 3986) as they are, every other byte as
// %XX in upper case.
func appendURIEncoded(dst, key []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, ch := range key {
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9',
			ch == '-', ch == '.', ch == '_', ch == '~':
			dst = append(dst, ch)
		default:
			dst = append(dst, '%', hex[ch>>4], hex[ch&15])
		}
	}
	return dst
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
