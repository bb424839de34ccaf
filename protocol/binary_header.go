package protocol

// The memcached binary protocol's frame header (protocol_binary.h). Every
// request and response starts with the same 24 bytes, big-endian:
//
//	 0        1        2        3
//	+--------+--------+--------+--------+
//	| magic  | opcode |     key length  |
//	+--------+--------+--------+--------+
//	| extlen |datatype| vbucket/status  |   vbucket in requests, status in responses
//	+--------+--------+--------+--------+
//	|        total body length          |   extras + key + value
//	+--------+--------+--------+--------+
//	|        opaque (echoed back)       |
//	+--------+--------+--------+--------+
//	|                                   |
//	+             CAS (64 bit)          +
//	|                                   |
//	+--------+--------+--------+--------+
//	| extras (extlen) | key (keylen) | value (bodylen - extlen - keylen) |
//
// Requests carry magic 0x80, responses 0x81.

import "encoding/binary"

const (
	binReqMagic  = 0x80
	binResMagic  = 0x81
	binHeaderLen = 24
	// binMaxExtLen is memcached's BIN_MAX_EXTLEN: the largest extras any
	// opcode uses (incr/decr: delta 8, initial 8, expiration 4).
	binMaxExtLen = 20
	// binBodyMargin: a body longer than the item size limit by more than
	// this is not a value too large for the cache but garbage, and closes
	// the connection (memcached swallows any length; see
	// docs/protocol-binary.md).
	binBodyMargin = 16 << 20
)

// Opcodes (protocol_binary_command).
const (
	opGet        = 0x00
	opSet        = 0x01
	opAdd        = 0x02
	opReplace    = 0x03
	opDelete     = 0x04
	opIncrement  = 0x05
	opDecrement  = 0x06
	opQuit       = 0x07
	opFlush      = 0x08
	opGetQ       = 0x09
	opNoop       = 0x0a
	opVersion    = 0x0b
	opGetK       = 0x0c
	opGetKQ      = 0x0d
	opAppend     = 0x0e
	opPrepend    = 0x0f
	opStat       = 0x10
	opSetQ       = 0x11
	opAddQ       = 0x12
	opReplaceQ   = 0x13
	opDeleteQ    = 0x14
	opIncrementQ = 0x15
	opDecrementQ = 0x16
	opQuitQ      = 0x17
	opFlushQ     = 0x18
	opAppendQ    = 0x19
	opPrependQ   = 0x1a
	opVerbosity  = 0x1b
	opTouch      = 0x1c
	opGAT        = 0x1d
	opGATQ       = 0x1e
	opSASLList   = 0x20
	opSASLAuth   = 0x21
	opSASLStep   = 0x22
	opGATK       = 0x23
	opGATKQ      = 0x24
)

// Response status codes (protocol_binary_response_status).
const (
	statusOK             uint16 = 0x0000
	statusKeyNotFound    uint16 = 0x0001
	statusKeyExists      uint16 = 0x0002
	statusTooLarge       uint16 = 0x0003
	statusInvalid        uint16 = 0x0004
	statusNotStored      uint16 = 0x0005
	statusDeltaBadval    uint16 = 0x0006
	statusAuthError      uint16 = 0x0020
	statusAuthContinue   uint16 = 0x0021
	statusUnknownCommand uint16 = 0x0081
	statusNoMemory       uint16 = 0x0082
	// statusInternal is PROTOCOL_BINARY_RESPONSE_EINTERNAL: tcache answers
	// it when the disk tier fails a write (memcached never sends it).
	statusInternal uint16 = 0x0084
)

// binHeader is a decoded frame header.
type binHeader struct {
	magic    uint8
	opcode   uint8
	keyLen   uint16
	extLen   uint8
	dataType uint8
	status   uint16 // vbucket id in requests
	bodyLen  uint32
	opaque   uint32
	cas      uint64
}

// parseBinHeader decodes the first binHeaderLen bytes of b.
func parseBinHeader(b []byte) binHeader {
	_ = b[binHeaderLen-1]
	return binHeader{
		magic:    b[0],
		opcode:   b[1],
		keyLen:   binary.BigEndian.Uint16(b[2:]),
		extLen:   b[4],
		dataType: b[5],
		status:   binary.BigEndian.Uint16(b[6:]),
		bodyLen:  binary.BigEndian.Uint32(b[8:]),
		opaque:   binary.BigEndian.Uint32(b[12:]),
		cas:      binary.BigEndian.Uint64(b[16:]),
	}
}

// appendBinHeader appends the encoding of h to b.
func appendBinHeader(b []byte, h *binHeader) []byte {
	b = append(b, h.magic, h.opcode)
	b = binary.BigEndian.AppendUint16(b, h.keyLen)
	b = append(b, h.extLen, h.dataType)
	b = binary.BigEndian.AppendUint16(b, h.status)
	b = binary.BigEndian.AppendUint32(b, h.bodyLen)
	b = binary.BigEndian.AppendUint32(b, h.opaque)
	return binary.BigEndian.AppendUint64(b, h.cas)
}

// binStatusText is the error body memcached sends with each status
// (write_bin_error).
func binStatusText(status uint16) string {
	switch status {
	case statusNoMemory:
		return "Out of memory"
	case statusUnknownCommand:
		return "Unknown command"
	case statusKeyNotFound:
		return "Not found"
	case statusInvalid:
		return "Invalid arguments"
	case statusKeyExists:
		return "Data exists for key."
	case statusTooLarge:
		return "Too large."
	case statusDeltaBadval:
		return "Non-numeric server-side value for incr or decr"
	case statusNotStored:
		return "Not stored."
	case statusAuthError:
		return "Auth failure."
	case statusInternal:
		return "Internal error: disk write failed"
	}
	return "UNHANDLED ERROR"
}
