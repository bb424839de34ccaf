package protocol

// A small language for binary-protocol frames in test scripts (the `binary`
// directive of datadriven_test.go), so that a script reads like the requests
// and replies it checks instead of hex dumps.
//
// Request lines (one frame each):
//
//	req op=set key=foo value=bar flags=5 exp=0 cas=0 opaque=1
//	req op=incr key=n delta=1 initial=10 exp=0xffffffff
//	req op=0x42 key=k                     (any opcode by number)
//	req op=get key=k keylen=300           (header fields overridden: malformed frames)
//	raw "\x80\x0a..."                     (exact bytes, a Go string literal)
//
// Fields: op (name or 0xNN); key and value (bare, or a Go string literal);
// vlen=N (a value of N 'x' bytes); flags and exp (extras of set/add/replace);
// delta, initial and exp (extras of incr/decr); exp (touch, gat*, flush:
// flush carries extras only when exp is given); level (verbosity); extras=HEX
// (replaces the extras); cas, opaque, vbucket, datatype, magic; keylen,
// extlen, bodylen (override the computed header fields).
//
// Reply frames render one per line:
//
//	res op=get status=ok opaque=1 cas=2 flags=5 key=foo value=bar
//
// Only non-zero header fields are shown; status is a name (ok, not_found,
// exists, too_large, invalid, not_stored, delta_badval, auth_error,
// unknown_command, no_memory) or 0xNNNN. Get-style extras show as flags=N,
// an incr/decr result as count=N, other extras as extras=HEX; values longer
// than 64 bytes as vlen=N. Bytes that are not a response frame are rendered
// like text replies (renderReply).

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

var binOpNames = map[string]uint8{
	"get": opGet, "set": opSet, "add": opAdd, "replace": opReplace, "delete": opDelete,
	"incr": opIncrement, "decr": opDecrement, "quit": opQuit, "flush": opFlush, "getq": opGetQ,
	"noop": opNoop, "version": opVersion, "getk": opGetK, "getkq": opGetKQ, "append": opAppend,
	"prepend": opPrepend, "stat": opStat, "setq": opSetQ, "addq": opAddQ, "replaceq": opReplaceQ,
	"deleteq": opDeleteQ, "incrq": opIncrementQ, "decrq": opDecrementQ, "quitq": opQuitQ,
	"flushq": opFlushQ, "appendq": opAppendQ, "prependq": opPrependQ, "verbosity": opVerbosity,
	"touch": opTouch, "gat": opGAT, "gatq": opGATQ, "sasl_list": opSASLList, "sasl_auth": opSASLAuth,
	"sasl_step": opSASLStep, "gatk": opGATK, "gatkq": opGATKQ,
}

func binOpName(op uint8) string {
	for n, o := range binOpNames {
		if o == op {
			return n
		}
	}
	return fmt.Sprintf("0x%02x", op)
}

var binStatusNames = map[uint16]string{
	statusOK: "ok", statusKeyNotFound: "not_found", statusKeyExists: "exists",
	statusTooLarge: "too_large", statusInvalid: "invalid", statusNotStored: "not_stored",
	statusDeltaBadval: "delta_badval", statusAuthError: "auth_error",
	statusAuthContinue: "auth_continue", statusUnknownCommand: "unknown_command",
	statusNoMemory: "no_memory",
}

// binSentinelOpaque marks the runner's own noop, which ends every reply.
const binSentinelOpaque = 0x5e571ce1

// binarySentinel is the noop request the runner appends to sync.
func binarySentinel() []byte {
	return appendBinHeader(nil, &binHeader{magic: binReqMagic, opcode: opNoop, opaque: binSentinelOpaque})
}

// splitFields splits a request line on spaces, keeping Go string literals
// (after "=") whole.
func splitFields(line string) ([]string, error) {
	var out []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		eq := strings.IndexByte(line, '=')
		sp := strings.IndexByte(line, ' ')
		if eq >= 0 && (sp < 0 || eq < sp) && eq+1 < len(line) && line[eq+1] == '"' {
			q, err := strconv.QuotedPrefix(line[eq+1:])
			if err != nil {
				return nil, fmt.Errorf("bad string literal in %q: %w", line, err)
			}
			out = append(out, line[:eq+1+len(q)])
			line = line[eq+1+len(q):]
			continue
		}
		if sp < 0 {
			out = append(out, line)
			break
		}
		out = append(out, line[:sp])
		line = line[sp:]
	}
	return out, nil
}

// encodeBinaryInput turns the lines of a binary block into request bytes.
func encodeBinaryInput(input string) ([]byte, error) {
	var out []byte
	for _, line := range strings.Split(input, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "raw "):
			s, err := strconv.Unquote(strings.TrimSpace(line[4:]))
			if err != nil {
				return nil, fmt.Errorf("bad raw literal %q: %w", line, err)
			}
			out = append(out, s...)
		case strings.HasPrefix(line, "req "):
			frame, err := encodeBinaryRequest(line[4:])
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
			out = append(out, frame...)
		default:
			return nil, fmt.Errorf("binary input line must start with req or raw: %q", line)
		}
	}
	return out, nil
}

func encodeBinaryRequest(line string) ([]byte, error) {
	fields, err := splitFields(line)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("field %q is not name=value", f)
		}
		if strings.HasPrefix(v, `"`) {
			if v, err = strconv.Unquote(v); err != nil {
				return nil, fmt.Errorf("field %q: %w", f, err)
			}
		}
		kv[k] = v
	}
	num := func(name string, bits int) (uint64, bool, error) {
		s, ok := kv[name]
		if !ok {
			return 0, false, nil
		}
		delete(kv, name)
		n, err := strconv.ParseUint(s, 0, bits)
		if err != nil {
			return 0, true, fmt.Errorf("field %s: %w", name, err)
		}
		return n, true, nil
	}
	h := binHeader{magic: binReqMagic}
	opName, ok := kv["op"]
	if !ok {
		return nil, fmt.Errorf("missing op=")
	}
	delete(kv, "op")
	if op, ok := binOpNames[opName]; ok {
		h.opcode = op
	} else if n, err := strconv.ParseUint(opName, 0, 8); err == nil {
		h.opcode = uint8(n)
	} else {
		return nil, fmt.Errorf("unknown op %q", opName)
	}
	key := []byte(kv["key"])
	value := []byte(kv["value"])
	delete(kv, "key")
	delete(kv, "value")
	var errs []error
	get := func(name string, bits int) (uint64, bool) {
		n, ok, err := num(name, bits)
		if err != nil {
			errs = append(errs, err)
		}
		return n, ok
	}
	if n, ok := get("vlen", 32); ok {
		value = bytes.Repeat([]byte("x"), int(n))
	}
	var extras []byte
	switch h.opcode {
	case opSet, opSetQ, opAdd, opAddQ, opReplace, opReplaceQ:
		flags, _ := get("flags", 32)
		exp, _ := get("exp", 32)
		extras = binary.BigEndian.AppendUint32(extras, uint32(flags))
		extras = binary.BigEndian.AppendUint32(extras, uint32(exp))
	case opIncrement, opIncrementQ, opDecrement, opDecrementQ:
		delta, _ := get("delta", 64)
		initial, _ := get("initial", 64)
		exp, _ := get("exp", 32)
		extras = binary.BigEndian.AppendUint64(extras, delta)
		extras = binary.BigEndian.AppendUint64(extras, initial)
		extras = binary.BigEndian.AppendUint32(extras, uint32(exp))
	case opTouch, opGAT, opGATQ, opGATK, opGATKQ:
		exp, _ := get("exp", 32)
		extras = binary.BigEndian.AppendUint32(extras, uint32(exp))
	case opFlush, opFlushQ:
		if exp, ok := get("exp", 32); ok {
			extras = binary.BigEndian.AppendUint32(extras, uint32(exp))
		}
	case opVerbosity:
		level, _ := get("level", 32)
		extras = binary.BigEndian.AppendUint32(extras, uint32(level))
	}
	if x, ok := kv["extras"]; ok {
		delete(kv, "extras")
		var err error
		if extras, err = hex.DecodeString(x); err != nil {
			errs = append(errs, fmt.Errorf("extras: %w", err))
		}
	}
	cas, _ := get("cas", 64)
	opaque, _ := get("opaque", 32)
	vbucket, _ := get("vbucket", 16)
	datatype, _ := get("datatype", 8)
	h.cas, h.opaque, h.status, h.dataType = cas, uint32(opaque), uint16(vbucket), uint8(datatype)
	h.keyLen = uint16(len(key))
	h.extLen = uint8(len(extras))
	h.bodyLen = uint32(len(extras) + len(key) + len(value))
	if n, ok := get("magic", 8); ok {
		h.magic = uint8(n)
	}
	if n, ok := get("keylen", 16); ok {
		h.keyLen = uint16(n)
	}
	if n, ok := get("extlen", 8); ok {
		h.extLen = uint8(n)
	}
	if n, ok := get("bodylen", 32); ok {
		h.bodyLen = uint32(n)
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	for k := range kv {
		return nil, fmt.Errorf("unknown field %q", k)
	}
	b := appendBinHeader(nil, &h)
	b = append(b, extras...)
	b = append(b, key...)
	return append(b, value...), nil
}

// splitBinaryReply cuts complete response frames off reply. It reports
// whether the sentinel noop was seen (and drops it) and returns the bytes
// that do not form a frame (a partial frame, or text).
func splitBinaryReply(reply []byte) (frames [][]byte, rest []byte, synced bool) {
	for len(reply) >= binHeaderLen && reply[0] == binResMagic {
		h := parseBinHeader(reply)
		n := binHeaderLen + int(h.bodyLen)
		if len(reply) < n {
			break
		}
		if h.opcode == opNoop && h.opaque == binSentinelOpaque {
			return frames, reply[n:], true
		}
		frames = append(frames, reply[:n])
		reply = reply[n:]
	}
	return frames, reply, false
}

// renderBinaryReply renders response frames, then whatever bytes follow.
func renderBinaryReply(reply []byte, closed bool) string {
	frames, rest, _ := splitBinaryReply(reply)
	var b strings.Builder
	for _, f := range frames {
		b.WriteString(renderBinaryFrame(f))
		b.WriteByte('\n')
	}
	b.WriteString(renderReply(rest, closed))
	return b.String()
}

func renderBinaryFrame(f []byte) string {
	h := parseBinHeader(f)
	body := f[binHeaderLen:]
	var b strings.Builder
	fmt.Fprintf(&b, "res op=%s status=", binOpName(h.opcode))
	if n, ok := binStatusNames[h.status]; ok {
		b.WriteString(n)
	} else {
		fmt.Fprintf(&b, "0x%04x", h.status)
	}
	if h.dataType != 0 {
		fmt.Fprintf(&b, " datatype=%d", h.dataType)
	}
	if h.opaque != 0 {
		fmt.Fprintf(&b, " opaque=%d", h.opaque)
	}
	if h.cas != 0 {
		fmt.Fprintf(&b, " cas=%d", h.cas)
	}
	ext := min(int(h.extLen), len(body))
	klen := min(int(h.keyLen), len(body)-ext)
	extras, key, value := body[:ext], body[ext:ext+klen], body[ext+klen:]
	isArith := h.opcode == opIncrement || h.opcode == opDecrement || h.opcode == opIncrementQ || h.opcode == opDecrementQ
	switch {
	case len(extras) == 0:
	case len(extras) == 4 && h.status == statusOK:
		fmt.Fprintf(&b, " flags=%d", binary.BigEndian.Uint32(extras))
	default:
		fmt.Fprintf(&b, " extras=%x", extras)
	}
	if len(key) > 0 || h.keyLen > 0 {
		fmt.Fprintf(&b, " key=%s", renderField(key))
	}
	switch {
	case isArith && h.status == statusOK && len(value) == 8:
		fmt.Fprintf(&b, " count=%d", binary.BigEndian.Uint64(value))
	case len(value) > 64:
		fmt.Fprintf(&b, " vlen=%d", len(value))
	case len(value) > 0:
		fmt.Fprintf(&b, " value=%s", renderField(value))
	}
	return b.String()
}

// renderField shows bytes bare when they are printable without spaces or
// quotes, else as a Go string literal.
func renderField(v []byte) string {
	for _, c := range v {
		if c <= ' ' || c > '~' || c == '"' {
			return strconv.Quote(string(v))
		}
	}
	if len(v) == 0 {
		return `""`
	}
	return string(v)
}
