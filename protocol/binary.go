package protocol

// The memcached binary protocol, answered as memcached 1.6.18 answers it
// (proto_bin.c: try_read_command_binary, dispatch_bin_command and the
// process_bin_* functions; comments name the function mirrored). The frame
// header is drawn in binary_header.go; docs/protocol-binary.md lists the
// opcodes and the deliberate differences from memcached.
//
// A connection speaks binary when Options.Protocol is "binary", or with
// "auto" when its first byte is the request magic 0x80 (serveOne decides
// once per connection). Each call of serveBinary answers one frame:
//
//  1. the 24-byte header is read and checked (magic, a body too long to be
//     an item): garbage closes the connection with a log line;
//  2. extras and key are read (at most 255+250 bytes, always within the read
//     buffer) and checked against the body length and the opcode's shape
//     (memcached: "unknown command" or "invalid arguments", then close);
//  3. the handler reads the value, if any, straight into c.value and calls
//     the engine.
//
// Quiet opcodes (…Q) answer only errors, and get-style hits; their replies
// wait in the writer and go out with the next non-quiet reply, because the
// writer is flushed only when the read buffer is drained (serveOne), as for
// text pipelines.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/tcache/tcache/engine"
)

// Protocol selection (Options.Protocol, memcached -B).
const (
	ProtocolAuto   = "auto"
	ProtocolASCII  = "ascii"
	ProtocolBinary = "binary"
)

// Per-connection protocol, decided on the first byte (conn.proto).
const (
	protoUndecided = iota
	protoText
	protoBinary
)

// saslAuthenticator is the seam for SASL authentication (binary opcodes
// 0x20 list mechanisms, 0x21 auth, 0x22 step). With none (Server.sasl nil,
// today always) SASL is off, and the opcodes answer "unknown command" as
// memcached started without -S does. An implementation (the security
// issue) will answer them and gate the other opcodes on authentication.
type saslAuthenticator interface {
	// Mechanisms is the space-separated list for SASL_LIST_MECHS.
	Mechanisms() string
	// Step runs one round: mech is the key of the request, data its value.
	// first is true for SASL_AUTH, false for SASL_STEP. It returns the
	// challenge or result to send, done when authentication finished (ok
	// tells whether it succeeded).
	Step(conn uint64, mech string, data []byte, first bool) (reply []byte, done, ok bool)
}

// binState is the request being answered: set by serveBinary, read by the
// handlers. ext holds the extras (up to binMaxExtLen; longer extras are only
// possible on frames refused by their opcode's shape check).
type binState struct {
	req   binHeader
	quiet bool // a quiet opcode: success replies are suppressed
	ext   [binMaxExtLen]byte
	key   []byte // c.key; valid until the next request
	vlen  int    // value bytes still unread in the body
	resp  [binHeaderLen + 8]byte
	// Reply parts built per request live here, not on the stack: c.w
	// writes through an interface, so a stack array would escape (one
	// allocation per reply; TestZeroAllocsBinary).
	flags [4]byte // a get reply's extras
	num   [8]byte // an incr/decr reply's value
}

var (
	errBinMagic    = errors.New("protocol: binary: invalid magic")
	errBinBodyLen  = errors.New("protocol: binary: impossible body length")
	errBinBadFrame = errors.New("protocol: binary: malformed request")
)

// quietBase maps a quiet opcode to its base opcode (dispatch_bin_command).
func quietBase(op uint8) (base uint8, quiet bool) {
	switch op {
	case opSetQ:
		return opSet, true
	case opAddQ:
		return opAdd, true
	case opReplaceQ:
		return opReplace, true
	case opDeleteQ:
		return opDelete, true
	case opIncrementQ:
		return opIncrement, true
	case opDecrementQ:
		return opDecrement, true
	case opQuitQ:
		return opQuit, true
	case opFlushQ:
		return opFlush, true
	case opAppendQ:
		return opAppend, true
	case opPrependQ:
		return opPrepend, true
	case opGetQ:
		return opGet, true
	case opGetKQ:
		return opGetK, true
	case opGATQ:
		return opGAT, true
	case opGATKQ:
		return opGATK, true
	}
	return op, false
}

// serveBinary reads and answers one binary request (try_read_command_binary
// and dispatch_bin_command). A non-nil error closes the connection.
func (c *conn) serveBinary() error {
	hb, err := c.r.Peek(binHeaderLen)
	if err != nil {
		return err
	}
	if c.bin == nil {
		c.bin = new(binState)
	}
	b := c.bin
	b.req = parseBinHeader(hb)
	c.r.Discard(binHeaderLen)
	c.state.Store(stateParse)
	if c.nc != nil {
		c.lastCmd.Store(c.srv.seconds())
	}
	if cap(c.value) > valueKeep {
		c.value = nil
	}
	h := &b.req
	if h.magic != binReqMagic {
		return c.binClose(errBinMagic, "magic", h.magic)
	}
	if int64(h.bodyLen) > int64(c.eng.MaxItemSize())+binBodyMargin {
		return c.binClose(errBinBodyLen, "body_length", h.bodyLen)
	}
	op, quiet := quietBase(h.opcode)
	b.quiet = quiet
	c.noreply = quiet
	extLen, keyLen, bodyLen := int(h.extLen), int(h.keyLen), int64(h.bodyLen)
	if int64(keyLen+extLen) > bodyLen {
		c.binError(statusUnknownCommand)
		return c.binClose(errBinBadFrame, "reason", "key and extras longer than the body")
	}
	if keyLen > maxKeyLen {
		return c.binInvalid("key longer than 250 bytes")
	}
	hdr, err := c.r.Peek(extLen + keyLen)
	if err != nil {
		return err
	}
	copy(b.ext[:], hdr[:min(extLen, binMaxExtLen)])
	b.key = c.setKey(hdr[extLen:])
	c.r.Discard(extLen + keyLen)
	b.vlen = int(bodyLen - int64(extLen+keyLen))

	// The shape of each opcode's frame, as dispatch_bin_command checks it.
	noBody := extLen == 0 && keyLen == 0 && bodyLen == 0
	switch op {
	case opVersion:
		if !noBody {
			return c.binInvalid("version with a body")
		}
		c.binRespond(statusOK, 0, nil, nil, bodyVersion)
	case opNoop:
		if !noBody {
			return c.binInvalid("noop with a body")
		}
		c.binRespond(statusOK, 0, nil, nil, nil)
	case opQuit:
		if !noBody {
			return c.binInvalid("quit with a body")
		}
		c.binRespond(statusOK, 0, nil, nil, nil)
		return errQuit
	case opFlush:
		if keyLen != 0 || b.vlen != 0 || (extLen != 0 && extLen != 4) {
			return c.binInvalid("bad flush frame")
		}
		c.binFlush()
	case opSet, opAdd, opReplace:
		if extLen != 8 || keyLen == 0 {
			return c.binInvalid("bad storage frame")
		}
		return c.binStore(op)
	case opAppend, opPrepend:
		if extLen != 0 || keyLen == 0 {
			return c.binInvalid("bad append/prepend frame")
		}
		return c.binStore(op)
	case opGet, opGetK:
		if extLen != 0 || keyLen == 0 || b.vlen != 0 {
			return c.binInvalid("bad get frame")
		}
		c.binGet(op)
	case opTouch, opGAT, opGATK:
		if extLen != 4 || keyLen == 0 {
			return c.binInvalid("bad touch/gat frame")
		}
		if err := c.swallow(int64(b.vlen)); err != nil {
			return err
		}
		c.binGet(op)
	case opDelete:
		if extLen != 0 || keyLen == 0 || b.vlen != 0 {
			return c.binInvalid("bad delete frame")
		}
		c.binDelete()
	case opIncrement, opDecrement:
		if extLen != 20 || keyLen == 0 || b.vlen != 0 {
			return c.binInvalid("bad incr/decr frame")
		}
		c.binArith(op == opIncrement)
	case opStat:
		if extLen != 0 {
			return c.binInvalid("stat with extras")
		}
		if err := c.swallow(int64(b.vlen)); err != nil {
			return err
		}
		c.binStat()
	case opVerbosity:
		// memcached 1.6 no longer knows this opcode; answered as in 1.4.
		if extLen != 4 || keyLen != 0 || b.vlen != 0 {
			return c.binInvalid("bad verbosity frame")
		}
		level := binary.BigEndian.Uint32(b.ext[:4])
		c.srv.verbosity.Store(int32(min(level, maxVerbosity)))
		c.binRespond(statusOK, 0, nil, nil, nil)
	case opSASLList:
		if !noBody {
			return c.binInvalid("sasl list mechs with a body")
		}
		if c.srv.sasl == nil {
			c.binError(statusUnknownCommand)
			return nil
		}
		c.binRespond(statusOK, 0, nil, nil, []byte(c.srv.sasl.Mechanisms()))
	case opSASLAuth, opSASLStep:
		if extLen != 0 || keyLen == 0 {
			return c.binInvalid("bad sasl frame")
		}
		return c.binSASL(op == opSASLAuth)
	default:
		// Unknown: answer and skip the rest of the body. (memcached swallows
		// the whole body length again after the key and extras were read,
		// and loses the framing; see docs/protocol-binary.md.)
		c.binError(statusUnknownCommand)
		return c.swallow(int64(b.vlen))
	}
	return nil
}

// binClose logs why the connection is being closed and returns the error
// that closes it.
func (c *conn) binClose(err error, k string, v any) error {
	c.srv.log.Warn("protocol: binary: closing connection", "conn", c.id, "remote", c.remoteAddr(), "err", err, k, v)
	return fmt.Errorf("%w (%s %v)", err, k, v)
}

// binInvalid is handle_binary_protocol_error: "invalid arguments", then
// close.
func (c *conn) binInvalid(reason string) error {
	c.binError(statusInvalid)
	return c.binClose(errBinBadFrame, "reason", reason)
}

// binRespond writes a response frame for the current request, unless it is
// quiet and status is OK (write_bin_response). cas 0 is sent as 0.
func (c *conn) binRespond(status uint16, cas uint64, extras, key, value []byte) {
	if c.noreply && status == statusOK {
		return
	}
	c.binFrame(c.bin.req.opcode, status, cas, extras, key, value)
}

// binFrame writes one response frame.
func (c *conn) binFrame(opcode uint8, status uint16, cas uint64, extras, key, value []byte) {
	b := c.bin
	h := binHeader{
		magic:   binResMagic,
		opcode:  opcode,
		keyLen:  uint16(len(key)),
		extLen:  uint8(len(extras)),
		status:  status,
		bodyLen: uint32(len(extras) + len(key) + len(value)),
		opaque:  b.req.opaque,
		cas:     cas,
	}
	c.w.Write(appendBinHeader(b.resp[:0], &h))
	c.w.Write(extras)
	c.w.Write(key)
	c.w.Write(value)
}

// binError is write_bin_error: the status and its text, sent even for quiet
// opcodes.
func (c *conn) binError(status uint16) {
	c.binFrame(c.bin.req.opcode, status, 0, nil, nil, binStatusBody(status))
}

// Error bodies, prebuilt so that errors do not allocate.
var (
	bodyNoMemory       = []byte(binStatusText(statusNoMemory))
	bodyUnknownCommand = []byte(binStatusText(statusUnknownCommand))
	bodyKeyNotFound    = []byte(binStatusText(statusKeyNotFound))
	bodyInvalid        = []byte(binStatusText(statusInvalid))
	bodyKeyExists      = []byte(binStatusText(statusKeyExists))
	bodyTooLarge       = []byte(binStatusText(statusTooLarge))
	bodyDeltaBadval    = []byte(binStatusText(statusDeltaBadval))
	bodyNotStored      = []byte(binStatusText(statusNotStored))
	bodyAuthError      = []byte(binStatusText(statusAuthError))
	bodyInternal       = []byte(binStatusText(statusInternal))
	bodyVersion        = []byte(memcachedVersion)
)

func binStatusBody(status uint16) []byte {
	switch status {
	case statusNoMemory:
		return bodyNoMemory
	case statusUnknownCommand:
		return bodyUnknownCommand
	case statusKeyNotFound:
		return bodyKeyNotFound
	case statusInvalid:
		return bodyInvalid
	case statusKeyExists:
		return bodyKeyExists
	case statusTooLarge:
		return bodyTooLarge
	case statusDeltaBadval:
		return bodyDeltaBadval
	case statusNotStored:
		return bodyNotStored
	case statusAuthError:
		return bodyAuthError
	case statusInternal:
		return bodyInternal
	}
	return []byte(binStatusText(status))
}

// binReadValue reads the rest of the body (the value) into c.value. The
// value is valid until the next request.
func (c *conn) binReadValue() ([]byte, error) {
	c.state.Store(stateNread)
	n := c.bin.vlen
	if cap(c.value) < n {
		c.value = make([]byte, n)
	}
	buf := c.value[:n]
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return nil, err
	}
	c.value = buf[:0]
	return buf, nil
}

// binStore answers set/add/replace/append/prepend and their quiet forms
// (process_bin_update, process_bin_append_prepend, complete_update_bin). A
// non-zero CAS in the header makes any of them compare first.
func (c *conn) binStore(op uint8) error {
	b := c.bin
	key := b.key
	args := &c.storeArgs
	*args = engine.StoreArgs{}
	switch op {
	case opSet, opAdd, opReplace:
		args.Flags = binary.BigEndian.Uint32(b.ext[0:4])
		args.Exptime = int64(binary.BigEndian.Uint32(b.ext[4:8]))
		switch op {
		case opSet:
			args.Mode = engine.ModeSet
		case opAdd:
			args.Mode = engine.ModeAdd
		default:
			args.Mode = engine.ModeReplace
		}
		if b.req.cas != 0 {
			args.Mode, args.CAS = engine.ModeCAS, b.req.cas
		}
	case opAppend, opPrepend:
		args.Mode = engine.ModeAppend
		if op == opPrepend {
			args.Mode = engine.ModePrepend
		}
		args.CAS, args.CompareCAS = b.req.cas, b.req.cas != 0
	}
	if b.vlen > c.eng.MaxItemSize() {
		// item_alloc fails: refused before reading, the body swallowed.
		c.binError(statusTooLarge)
		c.srv.storeTooLarge.Add(1)
		if op == opSet {
			// memcached unlinks the old item so no stale value survives.
			c.eng.Delete(key, c.plainDelete())
		}
		return c.swallow(int64(b.vlen))
	}
	value, err := c.binReadValue()
	if err != nil {
		return err
	}
	st, cas := c.eng.Store(key, value, args)
	switch st {
	case engine.OK:
		c.binRespond(statusOK, cas, nil, nil, nil)
	case engine.Exists:
		c.binError(statusKeyExists)
	case engine.NotFound:
		c.binError(statusKeyNotFound)
	case engine.TooLarge:
		if op == opAppend || op == opPrepend {
			c.binError(statusNotStored) // the combined item is too large
			break
		}
		if op == opSet {
			c.eng.Delete(key, c.plainDelete())
		}
		c.binError(statusTooLarge)
	case engine.NoMemory, engine.DiskFull:
		c.binError(statusNoMemory)
	case engine.DiskError:
		c.binError(statusInternal)
	default: // NotStored
		switch op {
		case opAdd:
			c.binError(statusKeyExists)
		case opReplace:
			c.binError(statusKeyNotFound)
		default:
			c.binError(statusNotStored)
		}
	}
	return nil
}

// binGet answers get/getk/touch/gat/gatk and the quiet forms
// (process_bin_get_or_touch): a hit carries the flags as extras (and the key
// for the K forms; touch sends no value); a miss is silent when quiet, else
// not found (the K forms echo the key instead of the error text).
func (c *conn) binGet(op uint8) {
	b := c.bin
	args := &c.getArgs
	*args = engine.GetArgs{}
	if op == opTouch || op == opGAT || op == opGATK {
		args.Touch = true
		args.Exptime = int64(binary.BigEndian.Uint32(b.ext[:4]))
		args.NoValue = op == opTouch
	}
	withKey := op == opGetK || op == opGATK
	val, info, found := c.eng.Get(c.value[:0], b.key, args)
	if !found {
		switch {
		case c.noreply:
		case withKey:
			c.binFrame(b.req.opcode, statusKeyNotFound, 0, nil, b.key, nil)
		default:
			c.binError(statusKeyNotFound)
		}
		return
	}
	c.value = val[:0]
	binary.BigEndian.PutUint32(b.flags[:], info.Flags)
	var key []byte
	if withKey {
		key = b.key
	}
	if op == opTouch {
		val = nil
	}
	// Get-style hits answer even when quiet.
	c.binFrame(b.req.opcode, statusOK, info.CAS, b.flags[:], key, val)
}

// binDelete answers delete/deleteq (process_bin_delete); a non-zero CAS
// must match.
func (c *conn) binDelete() {
	b := c.bin
	args := c.plainDelete()
	args.CAS, args.CompareCAS = b.req.cas, b.req.cas != 0
	switch c.eng.Delete(b.key, args) {
	case engine.OK:
		c.binRespond(statusOK, 0, nil, nil, nil)
	case engine.DiskFull:
		c.binError(statusNoMemory)
	case engine.DiskError:
		c.binError(statusInternal)
	case engine.Exists:
		c.binError(statusKeyExists)
	default:
		c.binError(statusKeyNotFound)
	}
}

// binArith answers incr/decr and the quiet forms (complete_incr_bin). A
// missing key is created holding the initial value (the reply is that
// value; the delta is not applied) unless the expiration is 0xffffffff.
func (c *conn) binArith(incr bool) {
	b := c.bin
	exp := binary.BigEndian.Uint32(b.ext[16:20])
	c.arithArgs = engine.ArithArgs{
		Incr:          incr,
		Delta:         binary.BigEndian.Uint64(b.ext[0:8]),
		CAS:           b.req.cas,
		CompareCAS:    b.req.cas != 0,
		Vivify:        exp != 0xffffffff,
		Initial:       binary.BigEndian.Uint64(b.ext[8:16]),
		VivifyExptime: int64(exp),
	}
	v, info, st := c.eng.Arith(b.key, &c.arithArgs)
	switch st {
	case engine.OK:
		binary.BigEndian.PutUint64(b.num[:], v)
		c.binRespond(statusOK, info.CAS, nil, nil, b.num[:])
	case engine.NotFound:
		c.binError(statusKeyNotFound)
	case engine.NonNumeric:
		c.binError(statusDeltaBadval)
	case engine.Exists:
		c.binError(statusKeyExists)
	case engine.NotStored:
		c.binError(statusNotStored)
	case engine.DiskError:
		c.binError(statusInternal)
	default: // NoMemory, DiskFull
		c.binError(statusNoMemory)
	}
}

// binFlush answers flush/flushq with an optional delay (process_bin_flush).
func (c *conn) binFlush() {
	var delay uint32
	if c.bin.req.extLen == 4 {
		delay = binary.BigEndian.Uint32(c.bin.ext[:4])
	}
	switch c.eng.Flush(int64(delay)) {
	case engine.OK:
		c.binRespond(statusOK, 0, nil, nil, nil)
	case engine.DiskFull:
		c.binError(statusNoMemory)
	default:
		c.binError(statusInternal)
	}
}

// binSASL answers SASL_AUTH and SASL_STEP (process_bin_sasl_auth).
func (c *conn) binSASL(first bool) error {
	if c.srv.sasl == nil {
		c.binError(statusUnknownCommand)
		return c.swallow(int64(c.bin.vlen))
	}
	if c.bin.vlen > maxSASLData {
		return c.binInvalid("sasl data too long")
	}
	data, err := c.binReadValue()
	if err != nil {
		return err
	}
	reply, done, ok := c.srv.sasl.Step(c.id, string(c.bin.key), data, first)
	switch {
	case done && ok:
		c.binRespond(statusOK, 0, nil, nil, reply)
	case done:
		c.binError(statusAuthError)
	default:
		c.binFrame(c.bin.req.opcode, statusAuthContinue, 0, nil, nil, reply)
	}
	return nil
}

// maxSASLData bounds a SASL payload (memcached: MAX_SASL_MECH_LEN and a
// 1 KiB buffer).
const maxSASLData = 1024

// binStat answers stat with an optional group in the key
// (process_bin_stat): one frame per stat, then an empty terminator frame.
// Groups are matched by prefix, as memcached's strncmp does.
func (c *conn) binStat() {
	key := c.bin.key
	sw := binStatsWriter{c}
	has := func(p string) bool { return len(key) >= len(p) && string(key[:len(p)]) == p }
	switch {
	case len(key) == 0:
		c.generalStats(sw)
	case has("reset"):
		c.srv.resetStats()
	case has("settings"):
		c.settingsStats(sw)
	case has("detail"):
		switch rest := string(key[len("detail"):]); {
		case len(rest) >= 5 && rest[:5] == " dump":
			// No prefix statistics are kept: memcached's empty dump.
			sw.str("detailed", "END\r\n")
		case len(rest) >= 3 && rest[:3] == " on", len(rest) >= 4 && rest[:4] == " off":
		default:
			c.binError(statusKeyNotFound)
			return
		}
	case string(key) == "items":
		c.itemsStats(sw)
	case string(key) == "slabs":
		c.slabsStats(sw)
	case string(key) == "sizes":
		sw.str("sizes_status", "disabled")
	default:
		c.binError(statusKeyNotFound)
		return
	}
	c.binFrame(opStat, statusOK, 0, nil, nil, nil)
}

// binStatsWriter writes each stat as a stat response frame (key = name,
// value = value).
type binStatsWriter struct{ c *conn }

func (s binStatsWriter) str(name, value string) {
	c := s.c
	b := append(c.line[:0], value...)
	c.line = b
	c.binFrame(opStat, statusOK, 0, nil, []byte(name), b)
}

func (s binStatsWriter) u(name string, v uint64) {
	c := s.c
	c.line = strconv.AppendUint(c.line[:0], v, 10)
	c.binFrame(opStat, statusOK, 0, nil, []byte(name), c.line)
}

func (s binStatsWriter) i(name string, v int64) {
	c := s.c
	c.line = strconv.AppendInt(c.line[:0], v, 10)
	c.binFrame(opStat, statusOK, 0, nil, []byte(name), c.line)
}
