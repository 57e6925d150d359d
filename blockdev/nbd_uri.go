package blockdev

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// NBDAddress is where an NBD export is, as the NBD URI standard writes it:
//
//	nbd://host[:port]/export          TCP (port 10809 by default)
//	nbds://host[:port]/export         TCP with TLS
//	nbd+unix:///export?socket=PATH    Unix socket
//	nbds+unix:///export?socket=PATH   Unix socket with TLS
//
// The export name is the path without its leading slash, percent-decoded
// (empty: the server's default export). Query parameters: socket (Unix
// transports), tls-certificates (a directory with ca-cert.pem and, for a
// client certificate, client-cert.pem and client-key.pem), tls-hostname
// (the name the server's certificate must carry; default the host) and
// tls-verify-peer=false (accept any server certificate).
type NBDAddress struct {
	URI        string // as given, for messages and the mount source
	Network    string // "tcp" or "unix"
	Addr       string // host:port, or the socket path
	Export     string
	TLS        bool
	CertDir    string
	TLSHost    string
	VerifyPeer bool
}

// nbdDefaultPort is the IANA port of NBD.
const nbdDefaultPort = 10809

// IsNBDURI reports whether s names an NBD export rather than a file.
func IsNBDURI(s string) bool {
	for _, p := range []string{"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+tcp://", "nbds+tcp://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// ParseNBDURI parses an NBD URI (see NBDAddress).
func ParseNBDURI(s string) (*NBDAddress, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("NBD URI %q: %w", s, err)
	}
	a := &NBDAddress{URI: s, VerifyPeer: true}
	switch u.Scheme {
	case "nbd", "nbd+tcp":
		a.Network = "tcp"
	case "nbds", "nbds+tcp":
		a.Network, a.TLS = "tcp", true
	case "nbd+unix":
		a.Network = "unix"
	case "nbds+unix":
		a.Network, a.TLS = "unix", true
	default:
		return nil, fmt.Errorf("NBD URI %q: unknown scheme %q (want nbd, nbds, nbd+unix or nbds+unix)", s, u.Scheme)
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("NBD URI %q: user information, fragments and opaque forms are not part of an NBD URI", s)
	}
	a.Export = strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	for k := range q {
		switch k {
		case "socket", "tls-certificates", "tls-hostname", "tls-verify-peer":
		default:
			return nil, fmt.Errorf("NBD URI %q: unknown query parameter %q", s, k)
		}
	}
	if a.Network == "unix" {
		if u.Host != "" {
			return nil, fmt.Errorf("NBD URI %q: a Unix-socket URI has no host (write nbd+unix:///export?socket=PATH)", s)
		}
		a.Addr = q.Get("socket")
		if a.Addr == "" {
			return nil, fmt.Errorf("NBD URI %q: a Unix-socket URI needs ?socket=PATH", s)
		}
	} else {
		if q.Has("socket") {
			return nil, fmt.Errorf("NBD URI %q: socket= is only for nbd+unix and nbds+unix", s)
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return nil, fmt.Errorf("NBD URI %q: no host", s)
		}
		if port == "" {
			port = strconv.Itoa(nbdDefaultPort)
		} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("NBD URI %q: bad port %q", s, port)
		}
		a.Addr = net.JoinHostPort(host, port)
		a.TLSHost = host
	}
	if !a.TLS && (q.Has("tls-certificates") || q.Has("tls-hostname") || q.Has("tls-verify-peer")) {
		return nil, fmt.Errorf("NBD URI %q: TLS parameters need an nbds scheme", s)
	}
	a.CertDir = q.Get("tls-certificates")
	if h := q.Get("tls-hostname"); h != "" {
		a.TLSHost = h
	}
	switch v := q.Get("tls-verify-peer"); v {
	case "", "true", "1", "yes":
	case "false", "0", "no":
		a.VerifyPeer = false
	default:
		return nil, fmt.Errorf("NBD URI %q: tls-verify-peer=%q: want true or false", s, v)
	}
	if a.TLS && a.VerifyPeer && a.TLSHost == "" {
		return nil, fmt.Errorf("NBD URI %q: TLS over a Unix socket needs tls-hostname= (the name in the server's certificate) or tls-verify-peer=false", s)
	}
	return a, nil
}
