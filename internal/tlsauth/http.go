package tlsauth

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// HTTPS for the monitoring endpoints (`ddpm coordinator --http-tls`, `ddpm trainer --http-tls`).
//
// A server made by HTTPServer speaks TLS 1.3 with the node certificate and asks every client for
// a certificate without requiring one in the handshake (tls.VerifyClientCertIfGiven): one that
// is offered must be signed by the CA (else the handshake fails), and the request is then
// checked per path by GuardHTTP. The join secret is not asked for: these endpoints only read, and
// one CA serves one run (package comment).

// HTTPOpenPaths are the paths GuardHTTP serves to a client without a certificate: the liveness
// and readiness probes, which the kubelet asks over HTTPS (scheme: HTTPS) with no client
// certificate. They answer one line of state and no run data.
var HTTPOpenPaths = []string{"/healthz", "/readyz"}

// HTTPReadRoles are the roles whose certificates may read the other paths (the dashboard,
// /api/*, /metrics), besides a certificate without a role. A trainer's may not: no trainer reads
// these endpoints, and a trainer's key sits in the most pods (the ones that run the data loading),
// so a monitoring client given one is a mistake to report rather than serve. Operators (people,
// Prometheus) and coordinators may.
var HTTPReadRoles = []Role{RoleCoordinator, RoleOperator}

// MayReadHTTP reports whether a holder of role r may read the guarded HTTP paths
// (HTTPReadRoles, or no role).
func (r Role) MayReadHTTP() bool { return r == RoleNone || slices.Contains(HTTPReadRoles, r) }

// httpRefusedMsg is the message of the log line of every refused HTTPS request.
const httpRefusedMsg = "tlsauth: refused HTTP request"

// httpHandshakeMsg is the message of the log line of every failed HTTPS handshake (a client
// certificate of another CA, TLS below 1.3, plain HTTP to the HTTPS port).
const httpHandshakeMsg = "tlsauth: refused HTTPS connection"

// HTTPServerTLS returns the server side TLS configuration of HTTPServer: TLS 1.3, the node
// certificate, a client certificate verified against the CA when one is offered. Nil for a
// plain-text Bundle. Each call returns a new copy.
func (b *Bundle) HTTPServerTLS() *tls.Config {
	if b.insecure {
		return nil
	}
	c := b.serverTLS.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	return c
}

// HTTPClientTLS returns the TLS configuration a client of an HTTPServer needs: TLS 1.3, the
// server verified against the CA (and Config.ServerName when set), the node certificate offered.
// Nil for a plain-text Bundle. Each call returns a new copy.
func (b *Bundle) HTTPClientTLS() *tls.Config {
	if b.insecure {
		return nil
	}
	return b.clientTLS.Clone()
}

// GuardHTTP wraps h so that it serves a path of HTTPOpenPaths to anyone and every other path
// only to a client that presented a certificate of the CA (the handshake of HTTPServerTLS
// verified it) without a role or of a role in HTTPReadRoles. Refused: 401 when the request came
// without a certificate (or not over TLS), 403 for a certificate of another role, each with one
// line of text naming what is missing, and one WARN line on the Bundle's log (rate-limited per
// client host and reason like every refusal, with "path" and "cert_role").
func (b *Bundle) GuardHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(HTTPOpenPaths, r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		code, msg, role := http.StatusUnauthorized, "", RoleNone
		switch {
		case r.TLS == nil || len(r.TLS.PeerCertificates) == 0:
			msg = fmt.Sprintf("ddpm: no client certificate: %s needs one signed by this cluster's CA, of role %s or none "+
				"(curl --cert DIR/node.crt --key DIR/node.key --cacert DIR/ca.crt)", r.URL.Path, roleList(HTTPReadRoles, " or "))
		default:
			got, err := RoleOf(r.TLS.PeerCertificates[0])
			switch {
			case err != nil:
				code, msg = http.StatusForbidden, "ddpm: refused: "+strings.TrimPrefix(err.Error(), ErrRole.Error()+": ")
			case got.MayReadHTTP():
				h.ServeHTTP(w, r)
				return
			default:
				code, role = http.StatusForbidden, got
				msg = fmt.Sprintf("ddpm: role %s may not read %s (roles allowed: %s, or a certificate without a role)",
					got, r.URL.Path, roleList(HTTPReadRoles, ", "))
			}
		}
		// The reason leaves the path out, so a browser polling several paths makes one line.
		reason := msg
		if code == http.StatusUnauthorized {
			reason = "no client certificate"
		} else if role != RoleNone {
			reason = "role " + string(role)
		}
		b.refusals.warn(httpRefusedMsg, r.RemoteAddr, reason, "path", r.URL.Path, "cert_role", string(role), "reason", reason)
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, msg, code)
	})
}

// HTTPServer returns an *http.Server for h over HTTPS: TLSConfig HTTPServerTLS, Handler
// GuardHTTP(h), a 5 s ReadHeaderTimeout, and failed handshakes written as rate-limited WARN lines
// of the Bundle's log ("tlsauth: refused HTTPS connection", remote and err) instead of net/http's
// unthrottled ones. Serve it with srv.ServeTLS(listener, "", ""). It returns an error
// for a plain-text Bundle, which has no certificate to serve.
func (b *Bundle) HTTPServer(h http.Handler) (*http.Server, error) {
	if b.insecure {
		return nil, errors.New("tlsauth: HTTPS needs a certificate directory (--certs), not --insecure")
	}
	return &http.Server{Handler: b.GuardHTTP(h), TLSConfig: b.HTTPServerTLS(), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(httpErrorLog{b}, "", 0)}, nil
}

// httpErrorLog takes net/http's server log lines: a failed TLS handshake becomes a rate-limited
// refusal; a client that hung up before sending a byte of TLS (EOF: a TCP probe) is dropped;
// anything else is a WARN line as it is.
type httpErrorLog struct{ b *Bundle }

const handshakePrefix = "http: TLS handshake error from "

// sockAddrs matches a socket error's addresses ("read tcp 127.0.0.1:9090->127.0.0.1:53122"),
// which change from one connection of a client to the next.
var sockAddrs = regexp.MustCompile(`\b(tcp[46]?) \S+->\S+:`)

func (l httpErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, handshakePrefix)
	if !ok {
		l.b.log.Warn(line)
		return len(p), nil
	}
	remote, reason, _ := strings.Cut(rest, ": ")
	if reason == "EOF" {
		return len(p), nil
	}
	norm := sockAddrs.ReplaceAllString(reason, "$1:")
	if host := hostOf(remote); host != remote {
		norm = strings.ReplaceAll(norm, remote, host)
	}
	l.b.refusals.warn(httpHandshakeMsg, remote, norm, "err", reason)
	return len(p), nil
}
