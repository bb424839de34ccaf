package protocol

// The meta protocol: mg, ms, md, ma, mn and me, answered byte for byte as
// memcached 1.6.18 answers them (proto_text.c: process_mget_command,
// process_mset_command, process_mdelete_command,
// process_marithmetic_command, process_meta_command, _meta_flag_preparse).
//
// A meta line is
//
//	<cmd> <key> [<datalen> (ms only)] <flag>*
//
// Each flag is one character, optionally followed by a token ("T30",
// "Oabc"). The rules that shape the replies:
//
//   - A line holds at most 20 memcached tokens (command, key, ms's datalen,
//     flags, and the terminal token), so 17 flags (16 for ms).
//   - A flag may appear once ("CLIENT_ERROR duplicate flag"); an unknown one is
//     "CLIENT_ERROR invalid flag". mg and ms name the exact parse error; md
//     and ma answer every parse error with "invalid or duplicate flag".
//   - Numeric tokens are read with C's strtol/strtoul semantics, truncated to
//     32 bits where memcached stores them in 32 bits (T, N, R, F, ms's
//     datalen).
//   - Return flags are written in the order the request gave them; O echoes
//     its whole token (at most 32 bytes), k echoes the key (base64 and " b"
//     when the b flag was given).
//   - q (quiet) drops the nominal reply: EN for mg, HD for ms and md, HD/VA
//     of an existing counter for ma. Errors and other codes are always sent.
//   - ms errors found after the datalen was understood swallow the data
//     block; errors before it do not (the data line is then read as a
//     command, as memcached does).
//
// Nothing here allocates in the steady state: tokens are sub-slices of the
// read buffer, base64 keys are decoded into the connection's key buffer,
// replies are built in c.line with strconv.Append*, engine arguments live in
// the per-connection metaState.

import (
	"encoding/base64"
	"strconv"

	"github.com/tcache/tcache/engine"
)

const (
	// metaMaxTokens is memcached's MFLAG_MAX_OPT_LENGTH: a meta line with
	// more tokens (counting the terminal one) is refused.
	metaMaxTokens = 20
	// metaMaxOpaque is MFLAG_MAX_OPAQUE_LENGTH, counting the 'O'.
	metaMaxOpaque = 32
	// metaMaxDataLen is INT_MAX-2, the largest ms datalen memcached takes.
	metaMaxDataLen = 1<<31 - 1 - 2
)

var (
	metaMN               = []byte("MN\r\n")
	metaEN               = []byte("EN\r\n")
	metaError            = []byte("ERROR\r\n")
	metaBadFormat        = []byte("CLIENT_ERROR bad command line format\r\n")
	metaBadToken         = []byte("CLIENT_ERROR bad token in command line format\r\n")
	metaDuplicateFlag    = []byte("CLIENT_ERROR duplicate flag\r\n")
	metaInvalidFlag      = []byte("CLIENT_ERROR invalid flag\r\n")
	metaInvalidOrDup     = []byte("CLIENT_ERROR invalid or duplicate flag\r\n")
	metaDecodeKey        = []byte("CLIENT_ERROR error decoding key\r\n")
	metaMLength          = []byte("CLIENT_ERROR incorrect length for M token\r\n")
	metaBadInitial       = []byte("CLIENT_ERROR invalid numeric initial value\r\n")
	metaBadDelta         = []byte("CLIENT_ERROR invalid numeric delta value\r\n")
	metaOpaqueTooLong    = []byte("CLIENT_ERROR opaque token too long\r\n")
	metaFlagsTooLongMg   = []byte("CLIENT_ERROR options flags are too long\r\n")
	metaFlagsTooLong     = []byte("CLIENT_ERROR options flags too long\r\n")
	metaBadMsMode        = []byte("CLIENT_ERROR invalid mode for ms M token\r\n")
	metaBadMaMode        = []byte("CLIENT_ERROR invalid mode for ma M token\r\n")
	metaBadChunk         = []byte("CLIENT_ERROR bad data chunk\r\n")
	metaNonNumeric       = []byte("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
	metaTooLarge         = []byte("SERVER_ERROR object too large for cache\r\n")
	metaNoMemoryStore    = []byte("SERVER_ERROR out of memory storing object\r\n")
	metaNoMemoryArith    = []byte("SERVER_ERROR out of memory\r\n")
	metaDiskError        = []byte("SERVER_ERROR disk write failed\r\n")
	metaUnhandledStorage = []byte("SERVER_ERROR Unhandled storage type.\r\n")
	metaCRLF             = []byte("\r\n")
	metaCodeHD           = []byte("HD")
	metaCodeVA           = []byte("VA ")
	metaCodeNS           = []byte("NS")
	metaCodeEX           = []byte("EX")
	metaCodeNF           = []byte("NF")
	metaCodeEN           = []byte("EN")
	metaMEPrefix         = []byte("ME ")
	metaFetchYes         = []byte(" fetch=yes cls=")
	metaFetchNo          = []byte(" fetch=no cls=")
)

// metaFlags is one meta line's flags as _meta_flag_preparse understands
// them. Slices point into the read buffer or the connection's key buffer.
type metaFlags struct {
	seen [2]uint64 // flag characters seen (bit per byte value < 128)

	key       []byte // the key, base64-decoded when keyBinary
	keyBinary bool   // b

	value    bool // v
	noReply  bool // q
	noUpdate bool // u
	setStale bool // I

	newTTL  bool // T
	exptime int64

	vivify  bool // N
	autoviv int64

	recache    bool // R
	recacheTTL int64

	hasCAS bool // C
	cas    uint64

	clientFlags uint32 // F
	mode        byte   // M
	delta       uint64 // D (ma; default 1)
	initial     uint64 // J (ma)

	opaque []byte // O token (with its 'O'), nil when absent
	// order lists the echo flags (O k c s t f l h) and the flags that
	// change the item as the reply is built (T N R) in request order:
	// memcached applies them in one pass, so t reports the TTL of its place.
	order  [11]byte
	norder int
}

// after reports whether flag b came after flag a in the request (both
// present).
func (f *metaFlags) after(a, b byte) bool {
	seenA := false
	for _, o := range f.order[:f.norder] {
		switch o {
		case a:
			seenA = true
		case b:
			return seenA
		}
	}
	return false
}

// ttlTracker follows an item's expiry through the flag list the way
// memcached's reply loop does: t shows the expiry as changed by the T (and,
// for a created item, N) flags before it.
type ttlTracker struct {
	exp     int64 // absolute unix seconds, 0 = never
	pending int   // changes still to come; the last one leaves info.Exptime
}

func newTTLTracker(f *metaFlags, info *engine.ItemInfo) ttlTracker {
	t := ttlTracker{exp: info.PrevExptime}
	if f.newTTL {
		t.pending++
	}
	if f.vivify && info.Created {
		t.pending++
	}
	return t
}

// absExptimer converts a raw exptime with the engine's rules and clock;
// *engine.Engine implements it.
type absExptimer interface{ AbsExptime(raw int64) int64 }

// apply is a T or N flag (N only for a created item) with raw exptime raw.
// Only a created item given both N and T has an intermediate expiry, which
// the engine converts; without that conversion the final one is shown.
func (t *ttlTracker) apply(eng Engine, info *engine.ItemInfo, raw int64) {
	t.pending--
	if ae, ok := eng.(absExptimer); ok && t.pending > 0 {
		t.exp = ae.AbsExptime(raw)
		return
	}
	t.exp = info.Exptime
}

// metaState is a connection's meta scratch: flags and engine arguments kept
// between commands so that nothing escapes to the heap per request.
type metaState struct {
	f      metaFlags
	get    engine.GetArgs
	store  engine.StoreArgs
	arith  engine.ArithArgs
	del    engine.DeleteArgs
	opaque [metaMaxOpaque]byte // ms: the opaque outlives the data read
}

// metaScratch returns the connection's meta scratch, allocated on first use.
func (c *conn) metaScratch() *metaState {
	if c.meta == nil {
		c.meta = new(metaState)
	}
	return c.meta
}

// serveMeta answers one meta command (the hook called by dispatch).
func (c *conn) serveMeta(cmd, line []byte) error {
	// dispatch has tokenized the line already; ntok counts the terminal
	// token as memcached's ntokens does.
	ntok := c.ntok + 1
	switch cmd[1] {
	case 'g':
		return c.metaGet(ntok)
	case 's':
		return c.metaSet(ntok)
	case 'd':
		return c.metaDelete(ntok)
	case 'a':
		return c.metaArith(ntok)
	case 'n':
		c.w.Write(metaMN)
		// mn forces the replies so far out, as memcached's conn_mwrite.
		return c.w.Flush()
	case 'e':
		return c.metaDebug(ntok)
	}
	c.w.Write(metaError)
	return nil
}

// parseMetaFlags fills f from flag tokens the way _meta_flag_preparse does
// and returns nil, or the error line memcached answers. Duplicate and
// unknown flags stop the scan; bad numbers are remembered (the last one
// names the error) and the scan goes on. keyBuf receives a decoded b key.
func parseMetaFlags(f *metaFlags, key []byte, toks [][]byte, keyBuf []byte) []byte {
	*f = metaFlags{key: key, delta: 1}
	var errLine []byte
	for _, t := range toks {
		o := t[0]
		if o >= 127 || f.seen[o>>6]&(1<<(o&63)) != 0 {
			return metaDuplicateFlag
		}
		f.seen[o>>6] |= 1 << (o & 63)
		arg := t[1:]
		switch o {
		case 'b':
			n, ok := metaBase64Decode(keyBuf[:cap(keyBuf)], f.key)
			if !ok {
				errLine = metaDecodeKey
				f.key = f.key[:0]
			} else {
				f.key = keyBuf[:n]
			}
			f.keyBinary = true
		case 'N':
			f.vivify = true
			f.order[f.norder] = o
			f.norder++
			if v, ok := cStrtol32(arg); ok {
				f.autoviv = int64(v)
			} else {
				errLine = metaBadToken
			}
		case 'T':
			f.order[f.norder] = o
			f.norder++
			if v, ok := cStrtol32(arg); ok {
				f.exptime = int64(v)
				f.newTTL = true
			} else {
				errLine = metaBadToken
			}
		case 'R':
			f.order[f.norder] = o
			f.norder++
			if v, ok := cStrtol32(arg); ok {
				f.recache = true
				f.recacheTTL = int64(v)
			} else {
				errLine = metaBadToken
			}
		case 'O':
			f.opaque = t
			f.order[f.norder] = o
			f.norder++
		case 'k', 's', 't', 'c', 'f', 'l', 'h':
			if f.norder < len(f.order) {
				f.order[f.norder] = o
				f.norder++
			}
		case 'P', 'L':
		case 'v':
			f.value = true
		case 'u':
			f.noUpdate = true
		case 'q':
			f.noReply = true
		case 'F':
			if v, ok := cStrtoul(arg); ok {
				f.clientFlags = uint32(v)
			} else if errLine == nil {
				errLine = metaBadFormat
			}
		case 'C':
			if v, ok := cStrtoull(arg); ok {
				f.cas = v
				f.hasCAS = true
			} else {
				errLine = metaBadToken
			}
		case 'M':
			if len(t) != 2 {
				errLine = metaMLength
			} else {
				f.mode = t[1]
			}
		case 'J':
			if v, ok := cStrtoull(arg); ok {
				f.initial = v
			} else {
				errLine = metaBadInitial
			}
		case 'D':
			if v, ok := cStrtoull(arg); ok {
				f.delta = v
			} else {
				errLine = metaBadDelta
			}
		case 'I':
			f.setStale = true
		default:
			return metaInvalidFlag
		}
	}
	return errLine
}

// Note on F: memcached sets has_error for a bad F without naming an error,
// so the command's default ("bad command line format") is answered unless a
// later flag names another; parseMetaFlags keeps an earlier named error.

// metaFlagsFor parses the flags of the current line (tokens from first to
// the terminal one) into the connection's scratch.
func (c *conn) metaFlagsFor(m *metaState, first, ntok int) []byte {
	if c.key == nil {
		c.key = make([]byte, 0, maxKeyLen+1)
	}
	return parseMetaFlags(&m.f, c.tok[1], c.tok[first:ntok-1], c.key[:0])
}

// now is the current unix time of the server's clock.
func (c *conn) now() int64 { return c.srv.seconds() }

// appendMetaKey appends " k<key>", base64-encoded and followed by " b" for
// a binary key (memcached's META_KEY).
func appendMetaKey(dst, key []byte, binary bool) []byte {
	dst = append(dst, " k"...)
	if !binary {
		return append(dst, key...)
	}
	dst = base64.StdEncoding.AppendEncode(dst, key)
	return append(dst, " b"...)
}

// appendTTL appends the remaining TTL of an item (-1 = never expires).
func appendTTL(dst []byte, exptime, now int64) []byte {
	if exptime == 0 {
		return append(dst, "-1"...)
	}
	return strconv.AppendUint(dst, uint64(uint32(exptime-now)), 10)
}

// appendEcho appends the O and k flags (the only ones a reply without an
// item echoes).
func appendEcho(dst []byte, f *metaFlags) []byte {
	for _, o := range f.order[:f.norder] {
		switch o {
		case 'O':
			dst = append(dst, ' ')
			dst = append(dst, f.opaque...)
		case 'k':
			dst = appendMetaKey(dst, f.key, f.keyBinary)
		}
	}
	return dst
}

// opaqueTooLong reports the opaque rule every meta command checks.
func (f *metaFlags) opaqueTooLong() bool { return len(f.opaque) > metaMaxOpaque }

func (c *conn) metaGet(ntok int) error {
	if ntok < 3 {
		c.w.Write(metaError)
		return nil
	}
	if keyTooLong(c.tok[1]) {
		c.w.Write(metaBadFormat)
		return nil
	}
	if ntok > metaMaxTokens {
		c.w.Write(metaFlagsTooLongMg)
		return nil
	}
	m := c.metaScratch()
	if e := c.metaFlagsFor(m, 2, ntok); e != nil {
		c.w.Write(e)
		return nil
	}
	f := &m.f
	a := &m.get
	*a = engine.GetArgs{
		Meta:          true,
		NoValue:       !f.value,
		NoBump:        f.noUpdate,
		Touch:         f.newTTL,
		Exptime:       f.exptime,
		Vivify:        f.vivify,
		VivifyExptime: f.autoviv,
		Recache:       f.recache,
		RecacheTTL:    f.recacheTTL,

		VivifyAfterTouch:  f.vivify && f.newTTL && f.after('T', 'N'),
		RecacheAfterTouch: f.recache && f.newTTL && f.after('T', 'R'),
	}
	val, info, found := c.eng.Get(c.value[:0], f.key, a)
	if f.opaqueTooLong() {
		c.w.Write(metaOpaqueTooLong)
		return nil
	}
	if !found {
		if f.noReply {
			return nil
		}
		if f.norder == 0 {
			c.w.Write(metaEN)
			return nil
		}
		b := append(c.line[:0], metaCodeEN...)
		b = appendEcho(b, f)
		b = append(b, metaCRLF...)
		c.line = b
		c.w.Write(b)
		return nil
	}
	b := c.line[:0]
	if f.value {
		b = append(b, metaCodeVA...)
		b = strconv.AppendInt(b, int64(info.Size), 10)
	} else {
		b = append(b, metaCodeHD...)
	}
	now := int64(0)
	ttl := newTTLTracker(f, &info)
	for _, o := range f.order[:f.norder] {
		switch o {
		case 'T':
			ttl.apply(c.eng, &info, f.exptime)
		case 'N':
			if info.Created {
				ttl.apply(c.eng, &info, f.autoviv)
			}
		case 's':
			b = append(b, " s"...)
			b = strconv.AppendInt(b, int64(info.Size), 10)
		case 't':
			if now == 0 {
				now = c.now()
			}
			b = append(b, " t"...)
			b = appendTTL(b, ttl.exp, now)
		case 'c':
			b = append(b, " c"...)
			b = strconv.AppendUint(b, info.CAS, 10)
		case 'f':
			b = append(b, " f"...)
			b = strconv.AppendUint(b, uint64(info.Flags), 10)
		case 'l':
			if now == 0 {
				now = c.now()
			}
			b = append(b, " l"...)
			b = strconv.AppendUint(b, uint64(uint32(now-info.LastAccess)), 10)
		case 'h':
			if info.Fetched {
				b = append(b, " h1"...)
			} else {
				b = append(b, " h0"...)
			}
		case 'O':
			b = append(b, ' ')
			b = append(b, f.opaque...)
		case 'k':
			// The item's own mark, not this request's (memcached's
			// ITEM_KEY_BINARY).
			b = appendMetaKey(b, f.key, info.KeyBinary)
		}
	}
	if info.WinSent {
		b = append(b, " Z"...)
	}
	if info.Stale {
		b = append(b, " X"...)
	}
	if info.Win {
		b = append(b, " W"...)
	}
	b = append(b, metaCRLF...)
	c.line = b
	c.w.Write(b)
	if f.value {
		c.w.Write(val)
		c.w.Write(metaCRLF)
		c.value = val[:0]
	}
	return nil
}

func (c *conn) metaSet(ntok int) error {
	if ntok < 3 {
		c.w.Write(metaError)
		return nil
	}
	if keyTooLong(c.tok[1]) || ntok == 3 {
		c.w.Write(metaBadFormat)
		return nil
	}
	if ntok > metaMaxTokens {
		c.w.Write(metaFlagsTooLong)
		return nil
	}
	vlen, ok := cStrtol32(c.tok[2])
	if !ok || vlen < 0 || vlen > metaMaxDataLen {
		c.w.Write(metaBadFormat)
		return nil
	}
	m := c.metaScratch()
	errLine := c.metaFlagsFor(m, 3, ntok)
	f := &m.f
	a := &m.store
	if errLine == nil {
		*a = engine.StoreArgs{Mode: engine.ModeSet, Flags: f.clientFlags, Exptime: f.exptime, KeyBinary: f.keyBinary}
		switch f.mode {
		case 0, 'S':
		case 'E':
			a.Mode = engine.ModeAdd
		case 'A':
			a.Mode = engine.ModeAppend
		case 'P':
			a.Mode = engine.ModePrepend
		case 'R':
			a.Mode = engine.ModeReplace
		default:
			errLine = metaBadMsMode
		}
		if errLine == nil && f.opaqueTooLong() {
			errLine = metaOpaqueTooLong
		}
	}
	if errLine != nil {
		c.w.Write(errLine)
		return c.swallow(int64(vlen) + 2)
	}
	if f.hasCAS {
		switch a.Mode {
		case engine.ModeSet, engine.ModeReplace:
			a.Mode = engine.ModeCAS
			a.CAS = f.cas
			a.Invalidate = f.setStale
		case engine.ModeAppend, engine.ModePrepend:
			if f.cas != 0 {
				a.CAS = f.cas
				a.CompareCAS = true
			}
		}
	}
	if int(vlen) > c.eng.MaxItemSize() {
		c.w.Write(metaTooLarge)
		return c.swallow(int64(vlen) + 2)
	}
	// The key and the opaque live in the read buffer, which the data read
	// reuses: move them to the connection's scratch first.
	if !f.keyBinary {
		f.key = c.setKey(f.key)
	}
	if f.opaque != nil {
		f.opaque = m.opaque[:copy(m.opaque[:], f.opaque)]
	}
	value, ok, err := c.readData(int(vlen))
	if err != nil {
		return err
	}
	if !ok {
		c.w.Write(metaBadChunk)
		return nil
	}
	st, cas := c.eng.Store(f.key, value, a)
	b := c.line[:0]
	switch st {
	case engine.OK:
		if f.noReply {
			return nil
		}
		b = append(b, metaCodeHD...)
	case engine.Exists:
		b = append(b, metaCodeEX...)
	case engine.NotFound:
		b = append(b, metaCodeNF...)
	case engine.NotStored:
		b = append(b, metaCodeNS...)
	case engine.TooLarge:
		c.w.Write(metaTooLarge)
		return nil
	case engine.NoMemory, engine.DiskFull:
		c.w.Write(metaNoMemoryStore)
		return nil
	case engine.DiskError:
		c.w.Write(metaDiskError)
		return nil
	default:
		c.w.Write(metaUnhandledStorage)
		return nil
	}
	if st != engine.OK {
		cas = 0
	}
	for _, o := range f.order[:f.norder] {
		switch o {
		case 'O':
			b = append(b, ' ')
			b = append(b, f.opaque...)
		case 'k':
			b = appendMetaKey(b, f.key, f.keyBinary)
		case 'c':
			b = append(b, " c"...)
			b = strconv.AppendUint(b, cas, 10)
		}
	}
	b = append(b, metaCRLF...)
	c.line = b
	c.w.Write(b)
	return nil
}

// metaMutationFlags is the start that md and ma share (memcached's
// process_mdelete_command and process_marithmetic_command answer the same
// errors): it checks the token count and the key, and parses the flags into
// the conn's scratch. It answers an error itself and then returns nil.
func (c *conn) metaMutationFlags(ntok int) *metaState {
	if ntok < 3 {
		c.w.Write(metaError)
		return nil
	}
	if keyTooLong(c.tok[1]) {
		c.w.Write(metaBadFormat)
		return nil
	}
	if ntok > metaMaxTokens {
		c.w.Write(metaFlagsTooLong)
		return nil
	}
	m := c.metaScratch()
	if c.metaFlagsFor(m, 2, ntok) != nil {
		c.w.Write(metaInvalidOrDup)
		return nil
	}
	return m
}

func (c *conn) metaDelete(ntok int) error {
	m := c.metaMutationFlags(ntok)
	if m == nil {
		return nil
	}
	f := &m.f
	if f.opaqueTooLong() {
		c.w.Write(metaOpaqueTooLong)
		return nil
	}
	a := &m.del
	*a = engine.DeleteArgs{
		CAS:        f.cas,
		CompareCAS: f.hasCAS,
		Invalidate: f.setStale,
		Touch:      f.setStale && f.newTTL,
		Exptime:    f.exptime,
	}
	b := c.line[:0]
	switch c.eng.Delete(f.key, a) {
	case engine.OK:
		if f.noReply {
			return nil
		}
		b = append(b, metaCodeHD...)
	case engine.DiskFull:
		c.w.Write(metaNoMemoryStore)
		return nil
	case engine.DiskError:
		c.w.Write(metaDiskError)
		return nil
	case engine.Exists:
		b = append(b, metaCodeEX...)
	default:
		b = append(b, metaCodeNF...)
	}
	b = appendEcho(b, f)
	b = append(b, metaCRLF...)
	c.line = b
	c.w.Write(b)
	return nil
}

func (c *conn) metaArith(ntok int) error {
	m := c.metaMutationFlags(ntok)
	if m == nil {
		return nil
	}
	f := &m.f
	incr := true
	switch f.mode {
	case 0, 'I', '+':
	case 'D', '-':
		incr = false
	default:
		c.w.Write(metaBadMaMode)
		return nil
	}
	a := &m.arith
	*a = engine.ArithArgs{
		Incr:          incr,
		Delta:         f.delta,
		CAS:           f.cas,
		CompareCAS:    f.hasCAS && f.cas != 0,
		Vivify:        f.vivify,
		Initial:       f.initial,
		VivifyExptime: f.autoviv,
		Touch:         f.newTTL,
		Exptime:       f.exptime,

		VivifyAfterTouch: f.vivify && f.newTTL && f.after('T', 'N'),
	}
	v, info, st := c.eng.Arith(f.key, a)
	if f.opaqueTooLong() {
		c.w.Write(metaOpaqueTooLong)
		return nil
	}
	b := c.line[:0]
	switch st {
	case engine.OK:
		// memcached skips the reply of a quiet ma only when the counter
		// existed: a created one is still answered.
		if f.noReply && !info.Created {
			return nil
		}
	case engine.NonNumeric:
		c.w.Write(metaNonNumeric)
		return nil
	case engine.NoMemory, engine.DiskFull:
		c.w.Write(metaNoMemoryArith)
		return nil
	case engine.DiskError:
		c.w.Write(metaDiskError)
		return nil
	case engine.Exists:
		b = append(b, metaCodeEX...)
	default:
		b = append(b, metaCodeNF...)
	}
	if st != engine.OK {
		b = appendEcho(b, f)
		b = append(b, metaCRLF...)
		c.line = b
		c.w.Write(b)
		return nil
	}
	// The value is written after the line, so it is formatted at the end of
	// the same scratch and its length found first.
	var digits [20]byte
	num := strconv.AppendUint(digits[:0], v, 10)
	if f.value {
		b = append(b, metaCodeVA...)
		b = strconv.AppendInt(b, int64(len(num)), 10)
	} else {
		b = append(b, metaCodeHD...)
	}
	now := int64(0)
	ttl := newTTLTracker(f, &info)
	for _, o := range f.order[:f.norder] {
		switch o {
		case 'T':
			ttl.apply(c.eng, &info, f.exptime)
		case 'N':
			if info.Created {
				ttl.apply(c.eng, &info, f.autoviv)
			}
		case 'c':
			b = append(b, " c"...)
			b = strconv.AppendUint(b, info.CAS, 10)
		case 't':
			if now == 0 {
				now = c.now()
			}
			b = append(b, " t"...)
			b = appendTTL(b, ttl.exp, now)
		case 'O':
			b = append(b, ' ')
			b = append(b, f.opaque...)
		case 'k':
			b = appendMetaKey(b, f.key, f.keyBinary)
		}
	}
	b = append(b, metaCRLF...)
	if f.value {
		b = append(b, num...)
		b = append(b, metaCRLF...)
	}
	c.line = b
	c.w.Write(b)
	return nil
}

// metaDebug answers "me <key> [b]": memcached's item dump
//
//	ME <key> exp=<-remaining or -1> la=<idle secs> cas=<cas> fetch=<yes|no> cls=<slab class> size=<bytes>
//
// exp is memcached 1.6.18's (now - exptime), a negative number for a live
// item. cls and size are what memcached's default slab allocator (-n 48,
// -f 1.25, 1 MiB items) would use for the item, so that tools comparing
// the two servers read the same numbers.
func (c *conn) metaDebug(ntok int) error {
	if ntok < 3 || keyTooLong(c.tok[1]) {
		c.w.Write(metaBadFormat)
		return nil
	}
	key := c.tok[1]
	if ntok >= 4 && len(c.tok[2]) == 1 && c.tok[2][0] == 'b' {
		if c.key == nil {
			c.key = make([]byte, 0, maxKeyLen+1)
		}
		n, ok := metaBase64Decode(c.key[:cap(c.key)], key)
		if !ok {
			c.w.Write(metaBadFormat)
			return nil
		}
		key = c.key[:n]
	}
	m := c.metaScratch()
	m.get = engine.GetArgs{NoValue: true, NoBump: true}
	_, info, found := c.eng.Get(nil, key, &m.get)
	if !found {
		c.w.Write(metaEN)
		return nil
	}
	now := c.now()
	b := append(c.line[:0], metaMEPrefix...)
	// memcached re-encodes the key of an item stored with a binary key.
	if info.KeyBinary {
		b = base64.StdEncoding.AppendEncode(b, key)
	} else {
		b = append(b, key...)
	}
	b = append(b, " exp="...)
	if info.Exptime == 0 {
		b = append(b, "-1"...)
	} else {
		b = strconv.AppendInt(b, int64(int32(now-info.Exptime)), 10)
	}
	b = append(b, " la="...)
	b = strconv.AppendUint(b, uint64(now-info.LastAccess), 10)
	b = append(b, " cas="...)
	b = strconv.AppendUint(b, info.CAS, 10)
	if info.Fetched {
		b = append(b, metaFetchYes...)
	} else {
		b = append(b, metaFetchNo...)
	}
	total := memcachedItemTotal(len(key), info.Size, info.Flags)
	b = strconv.AppendInt(b, int64(memcachedSlabClass(total)), 10)
	b = append(b, " size="...)
	b = strconv.AppendInt(b, int64(total), 10)
	b = append(b, metaCRLF...)
	c.line = b
	c.w.Write(b)
	return nil
}

// memcachedItemTotal is memcached's ITEM_ntotal on 64-bit Linux with CAS on:
// a 48-byte header, 8 bytes of CAS, the key and its NUL, 4 bytes of client
// flags when they are not zero, the value and its "\r\n".
func memcachedItemTotal(nkey, nvalue int, flags uint32) int {
	n := 48 + 8 + nkey + 1 + nvalue + 2
	if flags != 0 {
		n += 4
	}
	return n
}

// memcachedSlabClass is the slab class memcached's defaults give an item of
// size bytes: classes start at 96 bytes and grow by 1.25, 8-byte aligned,
// up to the 512 KiB chunk maximum (the last class); larger items are
// chunked and reported in the last class.
func memcachedSlabClass(size int) int {
	const chunkMax = 512 << 10
	cls, sz := 1, 96
	for sz < size && float64(sz) <= chunkMax/1.25 {
		next := int(float64(sz) * 1.25)
		if next%8 != 0 {
			next += 8 - next%8
		}
		sz = next
		cls++
	}
	if sz < size {
		cls++ // the chunk-max class
	}
	return cls
}

// metaBase64Decode decodes src into dst like memcached's base64_decode:
// bytes outside the alphabet are skipped, '=' counts as a zero digit, the
// first block holding padding ends the input, and anything that is not a
// whole number of 4-digit blocks (or has more than 2 pads) fails. n is the
// decoded length; ok is false on failure or when dst is too short.
func metaBase64Decode(dst, src []byte) (n int, ok bool) {
	count := 0
	for _, ch := range src {
		if metaB64[ch] != 0x80 {
			count++
		}
	}
	if count == 0 || count%4 != 0 || count/4*3 > len(dst) {
		return 0, false
	}
	var block [4]byte
	count, pad := 0, 0
	for _, ch := range src {
		v := metaB64[ch]
		if v == 0x80 {
			continue
		}
		if ch == '=' {
			pad++
		}
		block[count] = v
		count++
		if count < 4 {
			continue
		}
		dst[n] = block[0]<<2 | block[1]>>4
		dst[n+1] = block[1]<<4 | block[2]>>2
		dst[n+2] = block[2]<<6 | block[3]
		n += 3
		count = 0
		if pad > 0 {
			if pad > 2 {
				return 0, false
			}
			n -= pad
			break
		}
	}
	return n, n > 0
}

// metaB64 maps a byte to its base64 digit, '=' to 0, anything else to 0x80.
var metaB64 = func() (t [256]byte) {
	for i := range t {
		t[i] = 0x80
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	t['='] = 0
	return t
}()

// cIsSpace is C's isspace in the "C" locale.
func cIsSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r')
}

// cParse reads a number the way C's strtoull does: leading white space, an
// optional sign, decimal digits. It reports the magnitude, the sign, and
// whether the digits overflowed 64 bits; ok is false when there are no
// digits or the number is followed by anything but the end or white space
// (memcached's safe_strto* rule).
func cParse(s []byte) (mag uint64, neg, overflow, ok bool) {
	i := 0
	for i < len(s) && cIsSpace(s[i]) {
		i++
	}
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		d := uint64(s[i] - '0')
		if mag > (1<<64-1-d)/10 {
			overflow = true
		}
		mag = mag*10 + d
		i++
	}
	if i == start {
		return 0, false, false, false
	}
	if i < len(s) && !cIsSpace(s[i]) {
		return 0, false, false, false
	}
	return mag, neg, overflow, true
}

// cStrtol32 is memcached's safe_strtol: strtol (64-bit long), then the
// result stored in an int32.
func cStrtol32(s []byte) (int32, bool) {
	mag, neg, overflow, ok := cParse(s)
	if !ok || overflow {
		return 0, false
	}
	if neg {
		if mag > 1<<63 {
			return 0, false
		}
		return int32(-int64(mag)), true
	}
	if mag > 1<<63-1 {
		return 0, false
	}
	return int32(int64(mag)), true
}

// cStrtoull is memcached's safe_strtoull: strtoull, refusing a negative
// number that wraps to the upper half.
func cStrtoull(s []byte) (uint64, bool) {
	mag, neg, overflow, ok := cParse(s)
	if !ok || overflow {
		return 0, false
	}
	if neg {
		mag = -mag
		if int64(mag) < 0 {
			return 0, false
		}
	}
	return mag, true
}

// cStrtoul is memcached's safe_strtoul on 64-bit Linux: strtoull rules; the
// caller keeps the low 32 bits as memcached does.
func cStrtoul(s []byte) (uint64, bool) { return cStrtoull(s) }
