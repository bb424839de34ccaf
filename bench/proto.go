package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire side of the load generator: request encoders that append to a
// caller's buffer, and reply parsers that read one reply from a
// bufio.Reader in place (lines are sub-slices of its buffer, values are
// skipped with Discard). Neither allocates; tests pin it with
// testing.AllocsPerRun.

// Errors of the reply parsers.
var (
	// ErrProtocol: the server answered something that is not a valid reply
	// to the request (a framing error: the connection is dropped).
	ErrProtocol = errors.New("bench: unexpected reply")
	// ErrServer: a well-formed error reply (SERVER_ERROR, or a binary status
	// other than success and not-found). Counted; the connection goes on.
	ErrServer = errors.New("bench: server error reply")
)

// wireProto selects the encoder and parser.
type wireProto byte

const (
	wireText wireProto = iota
	wireMeta
	wireBinary
)

func wireOf(name string) wireProto {
	switch name {
	case ProtocolMeta:
		return wireMeta
	case ProtocolBinary:
		return wireBinary
	default:
		return wireText
	}
}

// keyList is a set of keys stored back to back: key i is
// buf[ends[i-1]:ends[i]] (ends[-1] = 0). Reset and append reuse the arrays.
type keyList struct {
	buf  []byte
	ends []int
}

func (k *keyList) reset() { k.buf, k.ends = k.buf[:0], k.ends[:0] }

func (k *keyList) len() int { return len(k.ends) }

func (k *keyList) key(i int) []byte {
	start := 0
	if i > 0 {
		start = k.ends[i-1]
	}
	return k.buf[start:k.ends[i]]
}

// add appends prefix+decimal(n) and returns the new key.
func (k *keyList) add(prefix string, n uint64) []byte {
	start := len(k.buf)
	k.buf = appendUint(append(k.buf, prefix...), n)
	k.ends = append(k.ends, len(k.buf))
	return k.buf[start:]
}

// drop removes the last key.
func (k *keyList) drop() {
	k.ends = k.ends[:len(k.ends)-1]
	if len(k.ends) == 0 {
		k.buf = k.buf[:0]
	} else {
		k.buf = k.buf[:k.ends[len(k.ends)-1]]
	}
}

// appendUint is strconv.AppendUint for base 10, small and inlinable enough.
func appendUint(dst []byte, n uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for n >= 10 {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	tmp[i] = byte('0' + n)
	return append(dst, tmp[i:]...)
}

// Binary protocol constants (memcached's protocol_binary.h).
const (
	binReqMagic  = 0x80
	binResMagic  = 0x81
	binOpGet     = 0x00
	binOpSet     = 0x01
	binOpNoop    = 0x0a
	binOpGetKQ   = 0x0d
	binHeaderLen = 24

	binStatusOK       = 0x0000
	binStatusNotFound = 0x0001
)

// appendBinHeader appends a request header.
func appendBinHeader(dst []byte, op byte, keyLen, extLen, bodyLen int) []byte {
	var h [binHeaderLen]byte
	h[0] = binReqMagic
	h[1] = op
	binary.BigEndian.PutUint16(h[2:], uint16(keyLen))
	h[4] = byte(extLen)
	binary.BigEndian.PutUint32(h[8:], uint32(bodyLen))
	return append(dst, h[:]...)
}

// appendSet appends a set of key to value with exptime and flags 0.
func appendSet(dst []byte, p wireProto, key, value []byte, exptime int) []byte {
	switch p {
	case wireMeta:
		dst = append(append(dst, "ms "...), key...)
		dst = append(appendUint(append(dst, ' '), uint64(len(value))), " T"...)
		dst = append(appendUint(dst, uint64(exptime)), " F0\r\n"...)
	case wireBinary:
		dst = appendBinHeader(dst, binOpSet, len(key), 8, 8+len(key)+len(value))
		dst = append(dst, 0, 0, 0, 0, byte(exptime>>24), byte(exptime>>16), byte(exptime>>8), byte(exptime))
		return append(append(dst, key...), value...)
	default:
		dst = append(append(dst, "set "...), key...)
		dst = append(appendUint(append(dst, " 0 "...), uint64(exptime)), ' ')
		dst = append(appendUint(dst, uint64(len(value))), "\r\n"...)
	}
	return append(append(dst, value...), "\r\n"...)
}

// appendGet appends one get of every key in keys: one `get k1 k2 …` line
// (text), one `mg <key> v` per key (meta), or GETKQ per key and a NOOP
// (binary; a single key uses GET so that a miss is answered).
func appendGet(dst []byte, p wireProto, keys *keyList) []byte {
	switch p {
	case wireMeta:
		for i := range keys.len() {
			dst = append(append(append(dst, "mg "...), keys.key(i)...), " v\r\n"...)
		}
	case wireBinary:
		if keys.len() == 1 {
			k := keys.key(0)
			return append(appendBinHeader(dst, binOpGet, len(k), 0, len(k)), k...)
		}
		for i := range keys.len() {
			k := keys.key(i)
			dst = append(appendBinHeader(dst, binOpGetKQ, len(k), 0, len(k)), k...)
		}
		dst = appendBinHeader(dst, binOpNoop, 0, 0, 0)
	default:
		dst = append(dst, "get"...)
		for i := range keys.len() {
			dst = append(append(dst, ' '), keys.key(i)...)
		}
		dst = append(dst, "\r\n"...)
	}
	return dst
}

var (
	replyStored    = []byte("STORED\r\n")
	replyHD        = []byte("HD\r\n")
	replyEnd       = []byte("END\r\n")
	replyEN        = []byte("EN\r\n")
	prefixValue    = []byte("VALUE ")
	prefixVA       = []byte("VA ")
	prefixSrvErr   = []byte("SERVER_ERROR")
	replyNotStored = []byte("NOT_STORED\r\n")
	replyNS        = []byte("NS\r\n")
)

// readSetReply reads the reply to one set and returns the bytes it took.
// NOT_STORED and SERVER_ERROR replies return ErrServer (the stream is still
// in step); anything else unexpected returns ErrProtocol.
func readSetReply(br *bufio.Reader, p wireProto) (n int, err error) {
	if p == wireBinary {
		_, status, _, n, err := readBinReply(br)
		if err != nil {
			return n, err
		}
		if status != binStatusOK {
			return n, ErrServer
		}
		return n, nil
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return len(line), err
	}
	ok := replyStored
	if p == wireMeta {
		ok = replyHD
	}
	switch {
	case bytes.Equal(line, ok):
		return len(line), nil
	case bytes.HasPrefix(line, prefixSrvErr), bytes.Equal(line, replyNotStored), bytes.Equal(line, replyNS):
		return len(line), ErrServer
	}
	return len(line), protocolError(line)
}

// readGetReply reads the reply to one get of nkeys keys (as appendGet
// encoded it) and returns how many were hits and the bytes it took.
func readGetReply(br *bufio.Reader, p wireProto, nkeys int) (hits, n int, err error) {
	switch p {
	case wireMeta:
		for range nkeys {
			line, err := br.ReadSlice('\n')
			n += len(line)
			if err != nil {
				return hits, n, err
			}
			if bytes.Equal(line, replyEN) {
				continue
			}
			if !bytes.HasPrefix(line, prefixVA) {
				return hits, n, protocolError(line)
			}
			size, ok := parseSize(line[len(prefixVA):])
			if !ok {
				return hits, n, protocolError(line)
			}
			if err := discardValue(br, size); err != nil {
				return hits, n, err
			}
			n += size + 2
			hits++
		}
		return hits, n, nil
	case wireBinary:
		// A single key is a GET (answered hit or miss); several are GETKQ
		// each (only hits are answered) and a NOOP that ends the reply.
		var failed error
		for {
			op, status, _, m, err := readBinReply(br)
			n += m
			if err != nil {
				return hits, n, err
			}
			switch {
			case nkeys > 1 && op == binOpNoop:
				return hits, n, failed
			case status == binStatusOK:
				hits++
			case status != binStatusNotFound:
				failed = ErrServer
			}
			if nkeys == 1 {
				return hits, n, failed
			}
		}
	default:
		for {
			line, err := br.ReadSlice('\n')
			n += len(line)
			if err != nil {
				return hits, n, err
			}
			if bytes.Equal(line, replyEnd) {
				return hits, n, nil
			}
			if !bytes.HasPrefix(line, prefixValue) {
				if bytes.HasPrefix(line, prefixSrvErr) {
					return hits, n, ErrServer
				}
				return hits, n, protocolError(line)
			}
			// VALUE <key> <flags> <bytes>[ <cas>]: the size is the 4th token.
			size, ok := parseSize(field(line, 3))
			if !ok {
				return hits, n, protocolError(line)
			}
			if err := discardValue(br, size); err != nil {
				return hits, n, err
			}
			n += size + 2
			hits++
		}
	}
}

// readBinReply reads one binary response, skipping its body.
func readBinReply(br *bufio.Reader) (op byte, status uint16, bodyLen, n int, err error) {
	h, err := br.Peek(binHeaderLen)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if h[0] != binResMagic {
		return 0, 0, 0, 0, fmt.Errorf("%w: binary response magic 0x%02x", ErrProtocol, h[0])
	}
	op = h[1]
	status = binary.BigEndian.Uint16(h[6:])
	bodyLen = int(binary.BigEndian.Uint32(h[8:]))
	if bodyLen > maxValueSize+1<<16 {
		return 0, 0, 0, 0, fmt.Errorf("%w: binary body of %d bytes", ErrProtocol, bodyLen)
	}
	if _, err := br.Discard(binHeaderLen + bodyLen); err != nil {
		return 0, 0, 0, 0, err
	}
	return op, status, bodyLen, binHeaderLen + bodyLen, nil
}

// discardValue skips a data block of size bytes and its "\r\n".
func discardValue(br *bufio.Reader, size int) error {
	if _, err := br.Discard(size); err != nil {
		return err
	}
	crlf, err := br.Peek(2)
	if err != nil {
		return err
	}
	if crlf[0] != '\r' || crlf[1] != '\n' {
		return fmt.Errorf("%w: data block not terminated by \\r\\n", ErrProtocol)
	}
	_, err = br.Discard(2)
	return err
}

// field returns the i-th space-separated token of line (without "\r\n").
func field(line []byte, i int) []byte {
	line = bytes.TrimRight(line, "\r\n")
	for ; i > 0; i-- {
		sp := bytes.IndexByte(line, ' ')
		if sp < 0 {
			return nil
		}
		line = line[sp+1:]
	}
	if sp := bytes.IndexByte(line, ' '); sp >= 0 {
		line = line[:sp]
	}
	return line
}

// parseSize parses the leading decimal number of b (up to a space or "\r\n").
func parseSize(b []byte) (int, bool) {
	n, digits := 0, 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
		digits++
		if n > maxValueSize+1<<16 {
			return 0, false
		}
	}
	return n, digits > 0
}

// protocolError wraps ErrProtocol with (a bounded prefix of) the line. It
// allocates, but only on the way out of a broken connection.
func protocolError(line []byte) error {
	if len(line) > 80 {
		line = line[:80]
	}
	return fmt.Errorf("%w %q", ErrProtocol, line)
}
