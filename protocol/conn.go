package protocol

// The per-connection loop, and the helpers every protocol handler uses.
//
// Life of a connection: serve reads one command line at a time from a pooled
// bufio.Reader (readLine), dispatches it (dispatch, in text.go) and writes
// the reply into a pooled bufio.Writer. The writer is flushed only when the
// read buffer is drained, so a pipeline of N requests costs one write. A
// handler returns nil to keep the connection, or an error to close it (after
// flushing what was already answered): errQuit for `quit`, errFraming for
// input memcached closes on, or an I/O error.
//
// META HOOK. A line whose first token is one of mg ms md ma mn me is handed to
//
//	func (c *conn) serveMeta(cmd, line []byte) error
//
// implemented in meta.go. cmd is the two-byte command (a sub-slice of line);
// line is the whole request line without its "\r\n" (or "\n"), truncated at
// the first NUL byte as memcached does. Both are valid only until the next
// read from the connection (readData, swallow, or the next line): copy what
// must outlive that (see c.key). serveMeta writes its reply with c.w (or the
// write helpers below) and follows the same error contract as the text
// handlers. "mn" must answer "MN\r\n" (the test runner relies on it).
//
// Helpers for handlers (text.go and meta.go):
//   - c.tokenize(line) splits like memcached's tokenize_command into c.tok
//     (at most maxTokens-1 tokens; c.rest holds the unsplit remainder).
//   - c.readData(n) reads an n-byte data block plus its "\r\n" into c.value
//     and reports whether the terminator was right ("CLIENT_ERROR bad data
//     chunk" otherwise; the n+2 bytes are consumed either way, as memcached).
//   - c.swallow(n) discards n bytes of input (a refused data block).
//   - c.setKey(k) copies a key out of the read buffer into c.key.
//   - keyTooLong/validKey check memcached's key rules.
//   - c.w is the reply writer; c.reply(b) writes a line unless noreply.
//   - c.value is a scratch buffer for values (reused, per connection).
//   - c.getArgs/storeArgs/arithArgs/delArgs hold engine arguments: a pointer
//     to a local passed through the Engine interface escapes and allocates.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcache/tcache/engine"
)

var (
	// errQuit closes the connection after flushing (command `quit`).
	errQuit = errors.New("protocol: quit")
	// errFraming closes the connection: the input cannot be framed (a line
	// too long, garbage memcached closes on).
	errFraming = errors.New("protocol: framing error")
	// errShutdown is returned by reads once the server is shutting down.
	errShutdown = errors.New("protocol: shutting down")
	// errLongGet: a get/gets line longer than the read buffer (served by
	// serveLongGet, which streams its keys).
	errLongGet = errors.New("protocol: long get line")
)

const (
	// maxTokens is memcached's MAX_TOKENS: at most maxTokens-1 tokens are
	// split off a line; the rest is left for the command to handle.
	maxTokens = 24
	// maxKeyLen is memcached's KEY_MAX_LENGTH.
	maxKeyLen = 250
	// longLineLimit: a line with no "\n" in the first 2048 buffered bytes
	// closes the connection unless it is a get/gets (memcached
	// try_read_command_ascii).
	longLineLimit = 2048
	// valueKeep is the largest scratch value buffer kept between commands.
	valueKeep = 64 << 10
)

// Connection states, reported by `stats conns` with memcached's names.
const (
	stateWaiting = iota // conn_waiting: idle, waiting for a command
	stateParse          // conn_parse_cmd
	stateNread          // conn_nread: reading a data block
	stateWrite          // conn_mwrite
	stateClosing        // conn_closing
)

var stateNames = [...]string{"conn_waiting", "conn_parse_cmd", "conn_nread", "conn_mwrite", "conn_closing"}

// conn is one client connection. All fields except the atomics and mu are
// owned by the connection's goroutine.
type conn struct {
	srv *Server
	eng Engine
	nc  net.Conn // nil for in-memory connections (tests, fuzzing)
	src io.Reader
	id  uint64

	r *bufio.Reader
	w *bufio.Writer

	// tok holds the tokens of the current line (sub-slices of the read
	// buffer); ntok counts them; rest is the unsplit tail of a line with
	// more than maxTokens-1 tokens (nil when the whole line was split).
	tok  [maxTokens][]byte
	ntok int
	rest []byte

	// Engine arguments of the text commands, kept here because a pointer
	// passed through the Engine interface escapes: on the stack each call
	// would allocate.
	getArgs   engine.GetArgs
	storeArgs engine.StoreArgs
	arithArgs engine.ArithArgs
	delArgs   engine.DeleteArgs

	// Multi-key gets (getKeys): the engine's reusable state, the keys of
	// the current line (sub-slices of the read buffer, cleared after use),
	// and the callback, a method value made once per connection so that
	// passing it does not allocate. multiKeys and multiCAS are set for the
	// duration of one GetMulti call.
	multi     engine.MultiGet
	mkeys     [][]byte
	multiFn   func(i int, value []byte, info engine.ItemInfo, found bool)
	multiKeys [][]byte
	multiCAS  bool

	noreply bool   // the current command carries noreply
	key     []byte // copy of the current key (cap maxKeyLen+1)
	value   []byte // scratch: values read or fetched; valid until the next command
	line    []byte // scratch for building reply lines
	// meta is meta.go's per-connection scratch (flags, engine arguments),
	// allocated on the first meta command. Added by the meta protocol.
	meta *metaState
	// proto is the protocol this connection speaks (protoText or
	// protoBinary), decided from Options.Protocol and, with "auto", the
	// first byte received; protoUndecided until then.
	proto uint8
	// bin is binary.go's per-connection state, allocated on the first
	// binary request.
	bin *binState

	state   atomic.Uint32
	lastCmd atomic.Int64 // unix seconds of the last command (stats conns)

	mu sync.Mutex // serializes deadline changes with Shutdown's interrupt
}

// Read is the raw input of the connection's bufio.Reader. It flushes the
// replies already written (the reader is drained, or holds only part of a
// request: either way the client may be waiting for them), arms the idle
// timeout, refuses to block once the server shuts down, and counts bytes.
//
// At pipeline 1 every request costs two read(2)s: the one that returns it
// and, after the reply, one that finds the socket empty (EAGAIN) before the
// goroutine parks. That second read cannot be skipped through net's
// RawConn: the poller clears the socket's readiness at the start of every
// read, so data that arrived since the previous read would not wake the
// wait (docs/benchmarks.md, "fifth session").
func (c *conn) Read(p []byte) (int, error) {
	if c.w != nil && c.w.Buffered() > 0 {
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
	}
	if c.nc == nil {
		n, err := c.src.Read(p)
		c.srv.bytesRead.Add(uint64(n))
		return n, err
	}
	c.mu.Lock()
	if c.srv.closing.Load() {
		c.mu.Unlock()
		return 0, errShutdown
	}
	if t := c.srv.opts.IdleTimeout; t > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t))
	}
	c.mu.Unlock()
	n, err := c.nc.Read(p)
	c.srv.bytesRead.Add(uint64(n))
	return n, err
}

// interrupt wakes a connection blocked in Read during Shutdown.
func (c *conn) interrupt() {
	c.mu.Lock()
	c.nc.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

// connWriter is the raw output of the connection's bufio.Writer.
type connWriter struct{ c *conn }

func (w connWriter) Write(p []byte) (int, error) {
	var n int
	var err error
	if w.c.nc == nil {
		n, err = w.c.src.(io.Writer).Write(p)
	} else {
		n, err = w.c.nc.Write(p)
	}
	w.c.srv.bytesWritten.Add(uint64(n))
	return n, err
}

func (c *conn) remoteAddr() string {
	if c.nc == nil {
		return "memory"
	}
	return c.nc.RemoteAddr().String()
}

// serve runs the connection until it closes.
func (c *conn) serve() {
	defer func() {
		if v := recover(); v != nil {
			c.srv.logPanic(c, v)
		}
		c.state.Store(stateClosing)
		c.nc.Close()
		c.srv.removeConn(c)
	}()
	for {
		err := c.serveOne()
		if err != nil {
			if c.w.Buffered() > 0 {
				c.w.Flush()
			}
			if c.srv.verbosity.Load() > 1 && !errors.Is(err, errQuit) && !errors.Is(err, io.EOF) {
				c.srv.log.Debug("protocol: closing connection", "conn", c.id, "remote", c.remoteAddr(), "err", err)
			}
			return
		}
	}
}

// serveOne flushes if the input is drained, then reads and answers one
// command. A non-nil error closes the connection.
func (c *conn) serveOne() error {
	if c.r.Buffered() == 0 {
		if c.w.Buffered() > 0 {
			c.state.Store(stateWrite)
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
		c.state.Store(stateWaiting)
		if c.srv.closing.Load() {
			return errShutdown
		}
	}
	if c.proto == protoUndecided {
		if err := c.negotiate(); err != nil {
			return err
		}
	}
	if c.proto == protoBinary {
		return c.serveBinary()
	}
	line, err := c.readLine()
	if err == errLongGet {
		return c.serveLongGet()
	}
	if err != nil {
		return err
	}
	c.state.Store(stateParse)
	if c.nc != nil {
		c.lastCmd.Store(c.srv.seconds())
	}
	c.noreply = false
	if cap(c.value) > valueKeep {
		c.value = nil
	}
	return c.dispatch(line)
}

// negotiate decides the connection's protocol (memcached's
// try_read_command_negotiate): with Options.Protocol "auto", binary when the
// first byte is the binary request magic 0x80, text otherwise. With "ascii"
// a binary frame is read as text; with "binary" text is garbage and closes.
func (c *conn) negotiate() error {
	switch c.srv.opts.Protocol {
	case ProtocolASCII:
		c.proto = protoText
	case ProtocolBinary:
		c.proto = protoBinary
	default:
		b, err := c.r.Peek(1)
		if err != nil {
			return err
		}
		c.proto = protoText
		if b[0] == binReqMagic {
			c.proto = protoBinary
		}
	}
	return nil
}

// readLine returns the next command line without its "\n" (and the "\r"
// before it, as memcached strips it), cut at the first NUL. The slice points
// into the read buffer: valid until the next read from c.r.
func (c *conn) readLine() ([]byte, error) {
	for {
		buf, _ := c.r.Peek(c.r.Buffered())
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			line := buf[:i]
			c.r.Discard(i + 1)
			if i > 1 && line[i-1] == '\r' {
				line = line[:i-1]
			}
			if j := bytes.IndexByte(line, 0); j >= 0 {
				line = line[:j]
			}
			return line, nil
		}
		if len(buf) > longLineLimit {
			if !isGetPrefix(buf) {
				return nil, errFraming
			}
			if len(buf) == c.r.Size() {
				return nil, errLongGet
			}
		}
		if _, err := c.r.Peek(len(buf) + 1); err != nil && len(buf) == c.r.Buffered() {
			return nil, err
		}
	}
}

// isGetPrefix is memcached's exemption for long lines: at most 100 leading
// spaces, then "get " or "gets ".
func isGetPrefix(b []byte) bool {
	i := 0
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i > 100 {
		return false
	}
	b = b[i:]
	return bytes.HasPrefix(b, []byte("get ")) || bytes.HasPrefix(b, []byte("gets "))
}

// tokenize splits line on spaces into c.tok like memcached's
// tokenize_command: empty tokens are skipped; after maxTokens-1 tokens the
// remainder (if not empty) is left in c.rest. It returns memcached's
// "ntokens": the number of tokens plus one for the terminal token.
func (c *conn) tokenize(line []byte) int {
	n := 0
	s := 0
	c.rest = nil
	for e := 0; e < len(line); e++ {
		if line[e] != ' ' {
			continue
		}
		if s != e {
			c.tok[n] = line[s:e]
			n++
			if n == maxTokens-1 {
				if e+1 < len(line) {
					c.rest = line[e+1:]
				}
				c.ntok = n
				c.tok[n] = nil
				return n + 1
			}
		}
		s = e + 1
	}
	if s < len(line) {
		c.tok[n] = line[s:]
		n++
	}
	c.ntok = n
	c.tok[n] = nil
	return n + 1
}

// setKey copies k (already length-checked) into c.key and returns it.
func (c *conn) setKey(k []byte) []byte {
	if c.key == nil {
		c.key = make([]byte, 0, maxKeyLen+1)
	}
	c.key = append(c.key[:0], k...)
	return c.key
}

// readData reads a data block of n bytes and its two-byte terminator into
// c.value. ok is false when the terminator is not "\r\n" (the n+2 bytes are
// consumed anyway, as memcached does). The value is valid until the next
// command.
func (c *conn) readData(n int) (value []byte, ok bool, err error) {
	c.state.Store(stateNread)
	total := n + 2
	if cap(c.value) < total {
		c.value = make([]byte, total)
	}
	buf := c.value[:total]
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return nil, false, err
	}
	c.value = buf[:0]
	return buf[:n], buf[n] == '\r' && buf[n+1] == '\n', nil
}

// swallow discards n bytes of input.
func (c *conn) swallow(n int64) error {
	c.state.Store(stateNread)
	for n > 0 {
		chunk := int(min(n, int64(c.r.Size())))
		d, err := c.r.Discard(chunk)
		n -= int64(d)
		if err != nil {
			return err
		}
	}
	return nil
}

// reply writes a complete reply unless the command carries noreply.
func (c *conn) reply(b []byte) {
	if !c.noreply {
		c.w.Write(b)
	}
}

// keyTooLong is memcached's key length rule.
func keyTooLong(k []byte) bool { return len(k) > maxKeyLen }

// validKey reports whether k is a legal key for a new protocol (meta): 1 to
// 250 bytes, no control characters or spaces. The text protocol itself
// checks only the length, as memcached does.
func validKey(k []byte) bool {
	if len(k) == 0 || len(k) > maxKeyLen {
		return false
	}
	for _, b := range k {
		if b <= ' ' || b == 0x7f {
			return false
		}
	}
	return true
}

// statusReply maps an engine store status to its reply line.
func statusReply(s engine.Status) []byte {
	switch s {
	case engine.OK:
		return replyStored
	case engine.NotStored:
		return replyNotStored
	case engine.Exists:
		return replyExists
	case engine.NotFound:
		return replyNotFound
	case engine.TooLarge:
		return replyTooLarge
	case engine.NoMemory, engine.DiskFull:
		return replyNoMemory
	case engine.DiskError:
		return replyDiskError
	default:
		return replyServerErrorUnhandled
	}
}
