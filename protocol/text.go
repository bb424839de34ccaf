package protocol

// The memcached text protocol: dispatch and one handler per command, in the
// order and with the checks of memcached 1.6.18 (proto_text.c
// process_command_ascii). Comments name the memcached function mirrored.

import (
	"bytes"
	"math"
	"strconv"

	"github.com/tcache/tcache/engine"
)

// Prebuilt replies.
var (
	replyError                = []byte("ERROR\r\n")
	replyStored               = []byte("STORED\r\n")
	replyNotStored            = []byte("NOT_STORED\r\n")
	replyExists               = []byte("EXISTS\r\n")
	replyNotFound             = []byte("NOT_FOUND\r\n")
	replyDeleted              = []byte("DELETED\r\n")
	replyTouched              = []byte("TOUCHED\r\n")
	replyEnd                  = []byte("END\r\n")
	replyOK                   = []byte("OK\r\n")
	replyReset                = []byte("RESET\r\n")
	replyMN                   = []byte("MN\r\n")
	replyVersion              = []byte("VERSION " + memcachedVersion + "\r\n")
	replyBadFormat            = []byte("CLIENT_ERROR bad command line format\r\n")
	replyBadCommandLine       = []byte("CLIENT_ERROR bad command line\r\n")
	replyIllegalSlabID        = []byte("CLIENT_ERROR Illegal slab id\r\n")
	replyBadChunk             = []byte("CLIENT_ERROR bad data chunk\r\n")
	replyBadExptime           = []byte("CLIENT_ERROR invalid exptime argument\r\n")
	replyBadDelta             = []byte("CLIENT_ERROR invalid numeric delta argument\r\n")
	replyNonNumeric           = []byte("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
	replyDeleteUsage          = []byte("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n")
	replyDetailUsage          = []byte("CLIENT_ERROR usage: stats detail on|off|dump\r\n")
	replyTooLarge             = []byte("SERVER_ERROR object too large for cache\r\n")
	replyNoMemory             = []byte("SERVER_ERROR out of memory storing object\r\n")
	replyArithNoMemory        = []byte("SERVER_ERROR out of memory\r\n")
	replyDiskError            = []byte("SERVER_ERROR disk write failed\r\n")
	replyServerErrorUnhandled = []byte("SERVER_ERROR Unhandled storage type.\r\n")
	replyShutdownDisabled     = []byte("ERROR: shutdown not enabled\r\n")
	errTooManyConns           = []byte("ERROR Too many open connections\r\n")
	valuePrefix               = []byte("VALUE ")
	crlf                      = []byte("\r\n")
)

// memcachedVersion is the version `version` reports: clients insist on a
// plain X.Y.Z, so tcache reports the memcached release it mirrors and its own
// version in stat tcache_version.
const memcachedVersion = "1.6.18"

// maxVerbosity is memcached's MAX_VERBOSITY_LEVEL.
const maxVerbosity = 2

// dispatch answers one command line (process_command_ascii).
func (c *conn) dispatch(line []byte) error {
	nt := c.tokenize(line)
	if nt < 2 || len(c.tok[0]) < 2 {
		c.w.Write(replyError)
		return nil
	}
	cmd := c.tok[0]
	if cmd[0] == 'm' && len(cmd) == 2 {
		switch cmd[1] {
		case 'g', 's', 'd', 'a', 'n', 'e':
			c.srv.cmdMeta.Add(1)
			return c.serveMeta(cmd, line)
		}
		c.w.Write(replyError)
		return nil
	}
	switch string(cmd) { // the compiler does not allocate for this switch
	case "get", "bget":
		if nt < 3 {
			break
		}
		return c.serveGet(false, false)
	case "gets":
		if nt < 3 {
			break
		}
		return c.serveGet(true, false)
	case "gat":
		if nt < 3 {
			break
		}
		return c.serveGet(false, true)
	case "gats":
		if nt < 3 {
			break
		}
		return c.serveGet(true, true)
	case "set":
		if nt == 6 || nt == 7 {
			return c.serveStore(engine.ModeSet, nt)
		}
	case "add":
		if nt == 6 || nt == 7 {
			return c.serveStore(engine.ModeAdd, nt)
		}
	case "replace":
		if nt == 6 || nt == 7 {
			return c.serveStore(engine.ModeReplace, nt)
		}
	case "append":
		if nt == 6 || nt == 7 {
			return c.serveStore(engine.ModeAppend, nt)
		}
	case "prepend":
		if nt == 6 || nt == 7 {
			return c.serveStore(engine.ModePrepend, nt)
		}
	case "cas":
		if nt == 7 || nt == 8 {
			return c.serveStore(engine.ModeCAS, nt)
		}
	case "incr":
		if nt == 4 || nt == 5 {
			return c.serveArith(true, nt)
		}
	case "decr":
		if nt == 4 || nt == 5 {
			return c.serveArith(false, nt)
		}
	case "delete":
		if nt >= 3 && nt <= 5 {
			return c.serveDelete(nt)
		}
	case "touch":
		if nt == 4 || nt == 5 {
			return c.serveTouch(nt)
		}
	case "stats":
		return c.serveStats(nt)
	case "lru_crawler":
		return c.serveLRUCrawler(nt)
	case "flush_all":
		if nt >= 2 && nt <= 4 {
			return c.serveFlushAll(nt)
		}
	case "version":
		c.w.Write(replyVersion)
		return nil
	case "quit":
		return errQuit
	case "verbosity":
		if nt == 3 || nt == 4 {
			return c.serveVerbosity(nt)
		}
	case "shutdown":
		c.w.Write(replyShutdownDisabled)
		return nil
	case "cache_memlimit":
		// Accepted and ignored: the memory limit is fixed at start.
		if nt == 3 || nt == 4 {
			c.setNoreply(nt)
			if _, ok := parseUint32(c.tok[1]); !ok {
				c.reply(replyError)
				return nil
			}
			c.reply(replyOK)
			return nil
		}
	default:
		// memcached closes on what looks like an HTTP request.
		if last := c.tok[nt-2]; bytes.HasPrefix(last, []byte("HTTP/")) {
			return errFraming
		}
	}
	c.w.Write(replyError)
	return nil
}

// setNoreply is set_noreply_maybe: the last token "noreply" silences every
// reply of the command, errors included.
func (c *conn) setNoreply(nt int) bool {
	if string(c.tok[nt-2]) == "noreply" {
		c.noreply = true
	}
	return c.noreply
}

// serveGet answers get/gets/gat/gats (process_get_command). A key over 250
// bytes anywhere on the line turns the whole reply into CLIENT_ERROR.
func (c *conn) serveGet(withCAS, touch bool) error {
	args := &c.getArgs
	*args = engine.GetArgs{}
	first := 1
	if touch {
		exp, ok := parseInt32(c.tok[1])
		if !ok {
			c.w.Write(replyBadExptime)
			return nil
		}
		args.Touch, args.Exptime = true, int64(exp)
		first = 2
	}
	for _, k := range c.tok[first:c.ntok] {
		if keyTooLong(k) {
			c.w.Write(replyBadFormat)
			return nil
		}
	}
	if c.rest != nil && longestRun(c.rest) > maxKeyLen {
		c.w.Write(replyBadFormat)
		return nil
	}
	keys := append(c.mkeys[:0], c.tok[first:c.ntok]...)
	for rest := c.rest; len(rest) > 0; {
		i := bytes.IndexByte(rest, ' ')
		var k []byte
		if i < 0 {
			k, rest = rest, nil
		} else {
			k, rest = rest[:i], rest[i+1:]
		}
		if len(k) > 0 {
			keys = append(keys, k)
		}
	}
	c.getKeys(keys, args, withCAS)
	clear(keys) // drop the references into the read buffer
	c.mkeys = keys[:0]
	c.w.Write(replyEnd)
	return nil
}

// getKeys writes the VALUE blocks of keys (sub-slices of the read buffer).
// One key is a plain Get; several go through the engine's GetMulti, which
// reads their disk misses in one pass, with the connection's reusable
// MultiGet and callback so that nothing is allocated.
func (c *conn) getKeys(keys [][]byte, args *engine.GetArgs, withCAS bool) {
	if len(keys) == 1 {
		c.getOne(keys[0], args, withCAS)
		return
	}
	if c.multiFn == nil {
		c.multiFn = c.multiValue
	}
	c.multiKeys, c.multiCAS = keys, withCAS
	c.eng.GetMulti(&c.multi, keys, args, c.multiFn)
	c.multiKeys = nil
}

// multiValue is the GetMulti callback of getKeys.
func (c *conn) multiValue(i int, val []byte, info engine.ItemInfo, found bool) {
	if found {
		c.writeValue(c.multiKeys[i], val, &info, c.multiCAS)
	}
}

// getOne looks one key up and writes its VALUE block on a hit.
func (c *conn) getOne(key []byte, args *engine.GetArgs, withCAS bool) {
	val, info, found := c.eng.Get(c.value[:0], key, args)
	if !found {
		return
	}
	c.value = val[:0]
	c.writeValue(key, val, &info, withCAS)
}

// writeValue writes "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n".
func (c *conn) writeValue(key, val []byte, info *engine.ItemInfo, withCAS bool) {
	b := append(c.line[:0], valuePrefix...)
	b = append(b, key...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(info.Flags), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(val)), 10)
	if withCAS {
		b = append(b, ' ')
		b = strconv.AppendUint(b, info.CAS, 10)
	}
	b = append(b, crlf...)
	c.line = b
	c.w.Write(b)
	c.w.Write(val)
	c.w.Write(crlf)
}

// longestRun is the length of the longest run of non-space bytes in b.
func longestRun(b []byte) int {
	longest, run := 0, 0
	for _, x := range b {
		if x == ' ' {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	return longest
}

// serveStore answers set/add/replace/append/prepend/cas
// (process_update_command, then complete_nread_ascii).
func (c *conn) serveStore(mode engine.Mode, nt int) error {
	c.setNoreply(nt)
	key := c.tok[1]
	if keyTooLong(key) {
		c.reply(replyBadFormat)
		return nil
	}
	flags, ok1 := parseUint32(c.tok[2])
	exp, ok2 := parseInt32(c.tok[3])
	vlen, ok3 := parseInt32(c.tok[4])
	if !ok1 || !ok2 || !ok3 {
		c.reply(replyBadFormat)
		return nil
	}
	args := &c.storeArgs
	*args = engine.StoreArgs{Mode: mode, Flags: flags, Exptime: int64(exp)}
	if mode == engine.ModeCAS {
		cas, ok := parseUint64(c.tok[5])
		if !ok {
			c.reply(replyBadFormat)
			return nil
		}
		args.CAS = cas
	}
	if vlen < 0 || vlen > math.MaxInt32-2 {
		c.reply(replyBadFormat)
		return nil
	}
	key = c.setKey(key) // the read below may move the read buffer
	if int(vlen) > c.eng.MaxItemSize() {
		// Refused before reading: swallow the block without buffering it.
		c.reply(replyTooLarge)
		c.srv.storeTooLarge.Add(1)
		if mode == engine.ModeSet {
			// memcached unlinks the old item so no stale value survives a
			// failed set.
			c.eng.Delete(key, c.plainDelete())
		}
		return c.swallow(int64(vlen) + 2)
	}
	value, ok, err := c.readData(int(vlen))
	if err != nil {
		return err
	}
	if !ok {
		c.reply(replyBadChunk)
		return nil
	}
	st, _ := c.eng.Store(key, value, args)
	if st == engine.TooLarge && mode == engine.ModeSet {
		c.eng.Delete(key, c.plainDelete())
	}
	c.reply(statusReply(st))
	return nil
}

// serveArith answers incr/decr (process_arithmetic_command).
func (c *conn) serveArith(incr bool, nt int) error {
	c.setNoreply(nt)
	key := c.tok[1]
	if keyTooLong(key) {
		c.reply(replyBadFormat)
		return nil
	}
	delta, ok := parseUint64(c.tok[2])
	if !ok {
		c.reply(replyBadDelta)
		return nil
	}
	c.arithArgs = engine.ArithArgs{Incr: incr, Delta: delta}
	v, _, st := c.eng.Arith(key, &c.arithArgs)
	switch st {
	case engine.OK:
		if !c.noreply {
			b := strconv.AppendUint(c.line[:0], v, 10)
			b = append(b, crlf...)
			c.line = b
			c.w.Write(b)
		}
	case engine.NotFound:
		c.reply(replyNotFound)
	case engine.NonNumeric:
		c.reply(replyNonNumeric)
	case engine.NoMemory, engine.DiskFull:
		c.reply(replyArithNoMemory)
	default:
		c.reply(statusReply(st))
	}
	return nil
}

// serveDelete answers delete (process_delete_command): besides the key,
// only a "0" hold time and/or noreply are accepted.
func (c *conn) serveDelete(nt int) error {
	if nt > 3 {
		holdIsZero := string(c.tok[2]) == "0"
		noreply := c.setNoreply(nt)
		valid := (nt == 4 && (holdIsZero || noreply)) || (nt == 5 && holdIsZero && noreply)
		if !valid {
			c.reply(replyDeleteUsage)
			return nil
		}
	}
	key := c.tok[1]
	if keyTooLong(key) {
		c.reply(replyBadFormat)
		return nil
	}
	switch st := c.eng.Delete(key, c.plainDelete()); st {
	case engine.OK:
		c.reply(replyDeleted)
	case engine.DiskFull, engine.DiskError:
		c.reply(statusReply(st))
	default:
		c.reply(replyNotFound)
	}
	return nil
}

// plainDelete returns the arguments of a plain delete.
func (c *conn) plainDelete() *engine.DeleteArgs {
	c.delArgs = engine.DeleteArgs{}
	return &c.delArgs
}

// serveTouch answers touch (process_touch_command).
func (c *conn) serveTouch(nt int) error {
	c.setNoreply(nt)
	key := c.tok[1]
	if keyTooLong(key) {
		c.reply(replyBadFormat)
		return nil
	}
	exp, ok := parseInt32(c.tok[2])
	if !ok {
		c.reply(replyBadExptime)
		return nil
	}
	switch st := c.eng.Touch(key, int64(exp)); st {
	case engine.OK:
		c.reply(replyTouched)
	case engine.DiskFull, engine.DiskError:
		c.reply(statusReply(st))
	default:
		c.reply(replyNotFound)
	}
	return nil
}

// serveFlushAll answers flush_all [delay] [noreply]
// (process_flush_all_command).
func (c *conn) serveFlushAll(nt int) error {
	c.setNoreply(nt)
	var delay int32
	want := 2
	if c.noreply {
		want = 3
	}
	if nt != want {
		d, ok := parseInt32(c.tok[1])
		if !ok {
			c.reply(replyBadExptime)
			return nil
		}
		delay = d
	}
	if st := c.eng.Flush(int64(delay)); st != engine.OK {
		c.reply(statusReply(st))
		return nil
	}
	c.reply(replyOK)
	return nil
}

// serveVerbosity answers verbosity <level> [noreply].
func (c *conn) serveVerbosity(nt int) error {
	c.setNoreply(nt)
	level, ok := parseUint32(c.tok[1])
	if !ok {
		c.reply(replyBadFormat)
		return nil
	}
	c.srv.verbosity.Store(int32(min(level, maxVerbosity)))
	c.reply(replyOK)
	return nil
}

// Number parsing with the exact acceptance rules of memcached's safe_strto*
// helpers (C strtoull/strtol: leading white space, an optional sign, at
// least one digit, then the end of the token or white space).

func isCSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r'
}

// parseCNumber scans like strtoull. neg reports a '-' sign; v is the
// magnitude; ok is false on no digits, overflow of 64 bits or trailing junk.
func parseCNumber(b []byte) (v uint64, neg, ok bool) {
	i := 0
	for i < len(b) && isCSpace(b[i]) {
		i++
	}
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false, false // ERANGE
		}
		v = v*10 + d
	}
	if i == start || (i < len(b) && !isCSpace(b[i])) {
		return 0, false, false
	}
	return v, neg, true
}

// parseUint64 is safe_strtoull.
func parseUint64(b []byte) (uint64, bool) {
	v, neg, ok := parseCNumber(b)
	if !ok {
		return 0, false
	}
	if neg {
		v = -v
		if int64(v) < 0 {
			return 0, false
		}
	}
	return v, true
}

// parseUint32 is safe_strtoul into a 32-bit field: the 64-bit result is
// truncated, as memcached's cast does.
func parseUint32(b []byte) (uint32, bool) {
	v, ok := parseUint64(b)
	return uint32(v), ok
}

// parseInt32 is safe_strtol into an int32_t: strtol on 64 bits (ERANGE
// beyond), then truncated.
func parseInt32(b []byte) (int32, bool) {
	v, neg, ok := parseCNumber(b)
	if !ok {
		return 0, false
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return int32(-int64(v)), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int32(int64(v)), true
}

// serveLongGet answers a get/gets line that does not fit in the read buffer.
// memcached grows its buffer without bound for these; tcache streams the
// keys instead, looking each up as soon as it has arrived whole, so memory
// per connection stays bounded. One difference: a key over 250 bytes answers
// CLIENT_ERROR after the values already sent (memcached discards them).
func (c *conn) serveLongGet() error {
	buf, _ := c.r.Peek(c.r.Buffered())
	i := 0
	for buf[i] == ' ' {
		i++
	}
	withCAS := buf[i+3] == 's'
	if withCAS {
		c.r.Discard(i + 5)
	} else {
		c.r.Discard(i + 4)
	}
	args := &c.getArgs
	*args = engine.GetArgs{}
	tooLong, cut := false, false
	for {
		buf, _ = c.r.Peek(c.r.Buffered())
		end := bytes.IndexByte(buf, '\n')
		var chunk []byte
		consumed := 0
		switch sp := bytes.LastIndexByte(buf, ' '); {
		case end >= 0:
			chunk, consumed = buf[:end], end+1
			if end > 0 && chunk[end-1] == '\r' {
				chunk = chunk[:end-1]
			}
		case sp >= 0:
			chunk, consumed = buf[:sp], sp+1
		case len(buf) == c.r.Size():
			tooLong, consumed = true, len(buf) // one token fills the buffer
		}
		if cut {
			chunk = nil // past a NUL: skip to the end of the line
		} else if z := bytes.IndexByte(chunk, 0); z >= 0 {
			chunk = chunk[:z] // memcached stops the line at a NUL
			cut = true
		}
		for len(chunk) > 0 && !tooLong {
			var k []byte
			if j := bytes.IndexByte(chunk, ' '); j >= 0 {
				k, chunk = chunk[:j], chunk[j+1:]
			} else {
				k, chunk = chunk, nil
			}
			if keyTooLong(k) {
				tooLong = true
			} else if len(k) > 0 {
				c.getOne(k, args, withCAS)
			}
		}
		c.r.Discard(consumed)
		if end >= 0 {
			break
		}
		if _, err := c.r.Peek(c.r.Buffered() + 1); err != nil {
			return err
		}
	}
	if tooLong {
		c.w.Write(replyBadFormat)
	} else {
		c.w.Write(replyEnd)
	}
	return nil
}
