package blockdev

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The NBD protocol's numbers (the NBD project's proto.md): the fixed
// newstyle handshake, its options and replies, and the transmission phase.
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic    = 0x49484156454f5054 // "IHAVEOPT"
	nbdOldMagic    = 0x00420281861253   // old-style handshake
	nbdRepMagic    = 0x0003e889045565a9 // option reply
	nbdReqMagic    = 0x25609513
	nbdSimpleMagic = 0x67446698
	nbdStructMagic = 0x668e33ef

	nbdFlagFixedNewstyle = 1 << 0 // handshake flags, and the client's
	nbdFlagNoZeroes      = 1 << 1

	nbdOptExportName      = 1
	nbdOptAbort           = 2
	nbdOptStartTLS        = 5
	nbdOptGo              = 7
	nbdOptStructuredReply = 8

	nbdRepAck         = 1
	nbdRepInfo        = 3
	nbdRepErrBit      = 1 << 31
	nbdRepErrUnsup    = nbdRepErrBit | 1
	nbdRepErrPolicy   = nbdRepErrBit | 2
	nbdRepErrInvalid  = nbdRepErrBit | 3
	nbdRepErrTLSReqd  = nbdRepErrBit | 5
	nbdRepErrUnknown  = nbdRepErrBit | 6
	nbdRepErrShutdown = nbdRepErrBit | 7

	nbdInfoExport    = 0
	nbdInfoBlockSize = 3

	// Transmission flags.
	nbdTFlagHasFlags  = 1 << 0
	nbdTFlagReadOnly  = 1 << 1
	nbdTFlagSendFlush = 1 << 2
	nbdTFlagSendFUA   = 1 << 3
	nbdTFlagSendTrim  = 1 << 5
	nbdTFlagSendZeros = 1 << 6

	nbdCmdRead  = 0
	nbdCmdWrite = 1
	nbdCmdDisc  = 2
	nbdCmdFlush = 3
	nbdCmdTrim  = 4
	nbdCmdZeros = 6 // NBD_CMD_WRITE_ZEROES

	nbdCmdFlagFUA = 1 << 0

	nbdReplyFlagDone        = 1 << 0
	nbdReplyTypeNone        = 0
	nbdReplyTypeOffsetData  = 1
	nbdReplyTypeOffsetHole  = 2
	nbdReplyTypeErrorBit    = 1 << 15
	nbdReplyTypeError       = nbdReplyTypeErrorBit | 1
	nbdReplyTypeErrorOffset = nbdReplyTypeErrorBit | 2

	// nbdMaxPayload is what a client may send or ask for in one request
	// when the server states no limit (the protocol's safe default).
	nbdMaxPayload = 32 << 20
	// nbdMaxOptionReply bounds an option reply we read: a server that
	// claims more is broken or hostile.
	nbdMaxOptionReply = 64 << 10
)

// nbdExport is what the handshake learned about the export.
type nbdExport struct {
	size       int64
	flags      uint16 // transmission flags
	minBlock   uint32
	maxPayload uint32
	structured bool
}

// Errors of the handshake a caller may want to tell apart.
var (
	ErrNBDNoExport   = errors.New("no such export")
	ErrNBDTLSNeeded  = errors.New("the server requires TLS (use nbds:// or nbds+unix://)")
	ErrNBDOldStyle   = errors.New("old-style NBD server: tfsmount speaks the fixed newstyle handshake only")
	ErrNBDNotAServer = errors.New("not an NBD server")
)

// nbdDial connects to a and runs the handshake to the transmission phase.
func nbdDial(ctx context.Context, a *NBDAddress) (net.Conn, nbdExport, error) {
	d := net.Dialer{
		// A peer that vanishes without a word (a cut cable, a crashed
		// host) is noticed within about half a minute, idle or not, so
		// that the reconnect can begin.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
		Control: func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 30000)
			})
			return errors.Join(err, serr)
		},
	}
	conn, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		return nil, nbdExport{}, fmt.Errorf("connect to %s: %w", a.URI, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	c, exp, err := nbdHandshake(conn, a)
	if err != nil {
		conn.Close()
		return nil, nbdExport{}, fmt.Errorf("%s: handshake: %w", a.URI, err)
	}
	c.SetDeadline(time.Time{})
	return c, exp, nil
}

// nbdOptions is the option phase of one connection.
type nbdOptions struct {
	conn net.Conn
	r    *bufio.Reader
}

func nbdHandshake(conn net.Conn, a *NBDAddress) (net.Conn, nbdExport, error) {
	h := &nbdOptions{conn: conn, r: bufio.NewReader(conn)}
	var hdr [18]byte
	if _, err := io.ReadFull(h.r, hdr[:16]); err != nil {
		return nil, nbdExport{}, fmt.Errorf("read the greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hdr[0:]) != nbdMagic {
		return nil, nbdExport{}, ErrNBDNotAServer
	}
	switch binary.BigEndian.Uint64(hdr[8:]) {
	case nbdOptMagic:
	case nbdOldMagic:
		return nil, nbdExport{}, ErrNBDOldStyle
	default:
		return nil, nbdExport{}, fmt.Errorf("%w (unknown greeting %#x)", ErrNBDNotAServer, binary.BigEndian.Uint64(hdr[8:]))
	}
	if _, err := io.ReadFull(h.r, hdr[16:18]); err != nil {
		return nil, nbdExport{}, fmt.Errorf("read the handshake flags: %w", err)
	}
	sflags := binary.BigEndian.Uint16(hdr[16:])
	if sflags&nbdFlagFixedNewstyle == 0 {
		return nil, nbdExport{}, fmt.Errorf("the server does not offer the fixed newstyle handshake")
	}
	cflags := uint32(nbdFlagFixedNewstyle)
	noZeroes := sflags&nbdFlagNoZeroes != 0
	if noZeroes {
		cflags |= nbdFlagNoZeroes
	}
	if err := binary.Write(conn, binary.BigEndian, cflags); err != nil {
		return nil, nbdExport{}, fmt.Errorf("send client flags: %w", err)
	}
	if a.TLS {
		if err := h.startTLS(a); err != nil {
			return nil, nbdExport{}, err
		}
	}
	var exp nbdExport
	switch typ, data, err := h.option(nbdOptStructuredReply, nil); {
	case err != nil:
		return nil, nbdExport{}, err
	case typ == nbdRepAck:
		exp.structured = true
	case typ == nbdRepErrTLSReqd:
		return nil, nbdExport{}, ErrNBDTLSNeeded
	case typ&nbdRepErrBit != 0:
		// Simple replies it is.
	default:
		return nil, nbdExport{}, fmt.Errorf("structured reply option: unexpected reply %#x (%d bytes)", typ, len(data))
	}
	ok, err := h.goExport(a.Export, &exp)
	if err != nil {
		return nil, nbdExport{}, err
	}
	if !ok {
		if err := h.exportName(a.Export, noZeroes, &exp); err != nil {
			return nil, nbdExport{}, err
		}
		exp.structured = false // only NBD_OPT_GO keeps them (they were acked, but be safe)
	}
	if exp.size <= 0 || exp.size%512 != 0 {
		return nil, nbdExport{}, fmt.Errorf("export %q is %d bytes, not a positive multiple of 512", a.Export, exp.size)
	}
	if exp.minBlock > 512 {
		return nil, nbdExport{}, fmt.Errorf("export %q needs requests aligned to %d bytes; tfsmount writes 512-byte sectors", a.Export, exp.minBlock)
	}
	if exp.maxPayload == 0 || exp.maxPayload > nbdMaxPayload {
		exp.maxPayload = nbdMaxPayload
	}
	exp.maxPayload &^= 511
	if exp.maxPayload < 4096 {
		return nil, nbdExport{}, fmt.Errorf("export %q accepts at most %d bytes per request; tfsmount needs 4096", a.Export, exp.maxPayload)
	}
	if h.r.Buffered() > 0 {
		return nil, nbdExport{}, fmt.Errorf("the server sent %d bytes nobody asked for", h.r.Buffered())
	}
	return h.conn, exp, nil
}

// option sends one option and reads its first reply.
func (h *nbdOptions) option(opt uint32, data []byte) (uint32, []byte, error) {
	b := make([]byte, 16, 16+len(data))
	binary.BigEndian.PutUint64(b[0:], nbdOptMagic)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	if _, err := h.conn.Write(append(b, data...)); err != nil {
		return 0, nil, fmt.Errorf("send option %d: %w", opt, err)
	}
	return h.reply(opt)
}

// reply reads one option reply to opt.
func (h *nbdOptions) reply(opt uint32) (uint32, []byte, error) {
	var b [20]byte
	if _, err := io.ReadFull(h.r, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("the server closed the connection in reply to option %d", opt)
		}
		return 0, nil, fmt.Errorf("read the reply to option %d: %w", opt, err)
	}
	if m := binary.BigEndian.Uint64(b[0:]); m != nbdRepMagic {
		return 0, nil, fmt.Errorf("reply to option %d has magic %#x", opt, m)
	}
	if got := binary.BigEndian.Uint32(b[8:]); got != opt {
		return 0, nil, fmt.Errorf("reply to option %d names option %d", opt, got)
	}
	typ, n := binary.BigEndian.Uint32(b[12:]), binary.BigEndian.Uint32(b[16:])
	if n > nbdMaxOptionReply {
		return 0, nil, fmt.Errorf("reply to option %d claims %d bytes", opt, n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(h.r, data); err != nil {
		return 0, nil, fmt.Errorf("read the reply to option %d: %w", opt, err)
	}
	return typ, data, nil
}

// replyError turns an error reply into an error.
func replyError(what string, typ uint32, data []byte) error {
	msg := ""
	if len(data) > 0 {
		msg = fmt.Sprintf(": server says %q", string(data))
	}
	switch typ {
	case nbdRepErrUnknown:
		return fmt.Errorf("%s: %w%s", what, ErrNBDNoExport, msg)
	case nbdRepErrTLSReqd:
		return fmt.Errorf("%s: %w%s", what, ErrNBDTLSNeeded, msg)
	case nbdRepErrPolicy:
		return fmt.Errorf("%s: refused by the server's policy%s", what, msg)
	case nbdRepErrShutdown:
		return fmt.Errorf("%s: the server is shutting down%s", what, msg)
	case nbdRepErrInvalid:
		return fmt.Errorf("%s: the server calls the request invalid%s", what, msg)
	}
	return fmt.Errorf("%s: error reply %#x%s", what, typ, msg)
}

// goExport selects the export with NBD_OPT_GO. It reports false if the
// server does not know the option (then NBD_OPT_EXPORT_NAME is the way).
func (h *nbdOptions) goExport(name string, exp *nbdExport) (bool, error) {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, nbdInfoBlockSize)
	typ, data, err := h.option(nbdOptGo, b)
	sawExport := false
	for {
		if err != nil {
			return false, err
		}
		switch {
		case typ == nbdRepAck:
			if !sawExport {
				return false, fmt.Errorf("export %q: the server acknowledged NBD_OPT_GO without saying the export's size", name)
			}
			return true, nil
		case typ == nbdRepErrUnsup:
			return false, nil
		case typ&nbdRepErrBit != 0:
			return false, replyError(fmt.Sprintf("export %q", name), typ, data)
		case typ == nbdRepInfo && len(data) >= 2:
			switch info := binary.BigEndian.Uint16(data); {
			case info == nbdInfoExport && len(data) == 12:
				exp.size = int64(binary.BigEndian.Uint64(data[2:]))
				exp.flags = binary.BigEndian.Uint16(data[10:])
				sawExport = true
			case info == nbdInfoBlockSize && len(data) == 14:
				exp.minBlock = binary.BigEndian.Uint32(data[2:])
				exp.maxPayload = binary.BigEndian.Uint32(data[10:])
			}
		}
		typ, data, err = h.reply(nbdOptGo)
	}
}

// exportName selects the export the old way: the server answers with the
// export's size and flags, or closes the connection.
func (h *nbdOptions) exportName(name string, noZeroes bool, exp *nbdExport) error {
	b := make([]byte, 16, 16+len(name))
	binary.BigEndian.PutUint64(b[0:], nbdOptMagic)
	binary.BigEndian.PutUint32(b[8:], nbdOptExportName)
	binary.BigEndian.PutUint32(b[12:], uint32(len(name)))
	if _, err := h.conn.Write(append(b, name...)); err != nil {
		return fmt.Errorf("send export name: %w", err)
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	r := make([]byte, n)
	if _, err := io.ReadFull(h.r, r); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("export %q: the server closed the connection: %w", name, ErrNBDNoExport)
		}
		return fmt.Errorf("export %q: %w", name, err)
	}
	exp.size = int64(binary.BigEndian.Uint64(r))
	exp.flags = binary.BigEndian.Uint16(r[8:])
	return nil
}

// startTLS upgrades the connection with NBD_OPT_STARTTLS.
func (h *nbdOptions) startTLS(a *NBDAddress) error {
	cfg, err := nbdTLSConfig(a)
	if err != nil {
		return err
	}
	typ, data, err := h.option(nbdOptStartTLS, nil)
	if err != nil {
		return err
	}
	if typ != nbdRepAck {
		if typ == nbdRepErrUnsup || typ == nbdRepErrPolicy {
			return fmt.Errorf("the server does not offer TLS (use nbd:// for a plain connection)")
		}
		return replyError("STARTTLS", typ, data)
	}
	if h.r.Buffered() > 0 {
		return fmt.Errorf("the server sent data before the TLS handshake")
	}
	tc := tls.Client(h.conn, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	h.conn, h.r = tc, bufio.NewReader(tc)
	return nil
}

// nbdTLSConfig builds the client's TLS configuration from the URI.
func nbdTLSConfig(a *NBDAddress) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: a.TLSHost, MinVersion: tls.VersionTLS12}
	if !a.VerifyPeer {
		cfg.InsecureSkipVerify = true
	}
	if a.CertDir == "" {
		return cfg, nil // the system's roots
	}
	ca, err := os.ReadFile(filepath.Join(a.CertDir, "ca-cert.pem"))
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("TLS: %s holds no PEM certificate", filepath.Join(a.CertDir, "ca-cert.pem"))
	}
	certFile, keyFile := filepath.Join(a.CertDir, "client-cert.pem"), filepath.Join(a.CertDir, "client-key.pem")
	if _, err := os.Stat(certFile); err == nil {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
