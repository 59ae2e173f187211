package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/grpc"

	"ddpm/internal/localrun"
)

// ErrListen: one of a replica's addresses (--raft-addr, --grpc-addr, --http-addr) cannot be
// bound for a reason the command line can change: the port is in use (another replica started
// twice, another program), the IP is not this machine's, or the port needs privileges. A mistake
// of the command (`ddpm coordinator` exits 2); see ListenFlag.
var ErrListen = errors.New("cannot listen")

// ErrRaftAddr: --raft-addr names no IP (0.0.0.0, ::, an empty host), which raft would advertise
// to the other replicas as this one's address; a mistake of the command (exit 2).
var ErrRaftAddr = errors.New("must name an IP other peers can reach")

// ErrPortHeldForNow: a replica's port is held only by a connection's local end or a TIME_WAIT
// (HeldForNow), which frees it by itself: no mistake of the command, so `ddpm coordinator`
// exits 1, which ddpm local and Kubernetes restart. ListenFlag's error for it matches this.
var ErrPortHeldForNow = errors.New("port held for now")

// ErrBadAddr: a replica's --raft-addr, --grpc-addr or --http-addr is not an address TCP can
// listen on (no port, a port past 65535, too many colons): a mistake of the command (`ddpm
// coordinator` exits 2); see CheckListenAddr.
var ErrBadAddr = errors.New("not a host:port address")

// CheckListenAddr checks addr, the value of flag (a replica's --raft-addr, --grpc-addr,
// --http-addr), as net.Listen reads a TCP address (ListenAddrProblem). It reads no DNS and binds
// nothing, so `ddpm coordinator` refuses such a value before anything binds. The error is one
// line naming flag and addr, matching ErrBadAddr.
func CheckListenAddr(flag, addr string) error {
	if why := ListenAddrProblem(addr); why != "" {
		return fmt.Errorf("coordinator: %s %s: %w (%s)", flag, addr, ErrBadAddr, why)
	}
	return nil
}

// ListenAddrProblem says why addr is not a TCP address net.Listen can take, "" when it is:
// host:port (an empty host: every interface) with a port from 0 to 65535 or a service name, and
// a host that is an IP or a name (999.1.1.1 and 10.0.5 are neither). The answer is
// net's words ("missing port in address", "invalid port") or "not an IP: HOST". A name that
// does not resolve is net.Listen's to find.
func ListenAddrProblem(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		var ae *net.AddrError
		var de *net.DNSError
		switch {
		case errors.As(err, &ae):
			return ae.Err
		case errors.As(err, &de):
			return de.Err
		}
		return err.Error()
	}
	// Digits and dots that are no IP (999.1.1.1, 10.0.5) are no name either: Go's resolver
	// takes no all-numeric name, and one that takes the short forms would read 10.0.5 as
	// another address than the one written.
	if host != "" && net.ParseIP(host) == nil && strings.Trim(host, "0123456789.") == "" {
		return "not an IP: " + host
	}
	return ""
}

// heldForNowError is ListenFlag's line for a port held for now; it matches ErrPortHeldForNow.
type heldForNowError struct{ line string }

func (e *heldForNowError) Error() string { return e.line }
func (e *heldForNowError) Unwrap() error { return ErrPortHeldForNow }

// ListenFlag binds addr, the value of flag (--raft-addr, --grpc-addr, --http-addr of a
// replica), for TCP; StartNode binds all three with it, and `ddpm coordinator --http-tls` its
// HTTPS port. A port a program listens on, an address not of this machine or a privileged port
// is one line matching ErrListen that names the flag, the address, what holds the port (pid and
// command line, found in /proc for a loopback or wildcard address) and what to do; a port held
// only by a connection or a TIME_WAIT is one line naming it, matching ErrPortHeldForNow (it frees
// by itself); other errors are net.Listen's, prefixed with the flag.
func ListenFlag(flag, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	fix := "give this replica other ports in every replica's --peers"
	if flag == "--http-addr" {
		fix = "give another --http-addr"
	}
	// Another process's outgoing connection may have taken a restarted replica's recorded port
	// while it was down: no mistake of the command (exit 1, which ddpm local and Kubernetes
	// restart).
	return nil, ListenError("coordinator", flag, addr, fix, "start the replica again", err)
}

// ListenError words err, net.Listen's failure to bind addr (the value of flag) for process
// ("coordinator", "trainer"): ListenFlag's lines for a replica, and the trainer's for its
// --listen and --http-addr, one wording for both. fix is the way on for a port in use or a
// privileged one, again what to do once a port held for now is free. A port a program listens
// on, an IP of no interface or a privileged port matches ErrListen; a port held only by a
// connection or a TIME_WAIT matches ErrPortHeldForNow; anything else is err prefixed with the flag.
func ListenError(process, flag, addr, fix, again string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		if held, ok := HeldForNow(addr); ok {
			return &heldForNowError{fmt.Sprintf("%s: %s %s: %s; %s", process, flag, addr, held, again)}
		}
		return fmt.Errorf("%s: %w on %s %s: the port is in use by %s: stop that process, or %s",
			process, ErrListen, flag, addr, PortHolder(addr), fix)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s: %w on %s %s: no network interface of this machine has that IP: give one of its addresses",
			process, ErrListen, flag, addr)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s: %w on %s %s: this user may not bind that port (below 1024 it needs privileges): %s",
			process, ErrListen, flag, addr, fix)
	}
	return fmt.Errorf("%s: %s %s: %w", process, flag, addr, err)
}

// PortHolder names what holds addr's TCP port, for a line saying the port is in use: "pid 4242
// (COMMAND LINE)" (localrun.PortHolder.Describe) for an address on loopback or every interface,
// where /proc shows it; "another process" otherwise.
func PortHolder(addr string) string {
	if h, ok := portHolder(addr); ok {
		return h.Describe()
	}
	return "another process"
}

// HeldForNow says, when addr's TCP port (bind failed with EADDRINUSE) is held only by a
// connection's local end or a TIME_WAIT, which free it by themselves, "the port is held for now
// by a connection of pid N (COMMAND) to REMOTE, not a listening program: it is free once that
// ends" (localrun.PortHolder.HeldBy), and true; false for a listening program, which stays, or
// where the holder cannot be told (an address of another IP, no /proc entry). The replicas'
// ListenFlag and the trainer's listen failure share it.
func HeldForNow(addr string) (string, bool) {
	h, ok := portHolder(addr)
	if !ok || h.Listening {
		return "", false
	}
	return "the port is held for now by " + h.HeldBy() + ", not a listening program: it is free once that ends", true
}

// portHolder finds what listens on addr's port, for an address on loopback or every interface
// (localrun.FindPortHolder reads the sockets whose binding conflicts with 127.0.0.1:PORT; for
// another IP its answer could name a socket that does not conflict, so none is looked up).
func portHolder(addr string) (localrun.PortHolder, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return localrun.PortHolder{}, false
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 {
		return localrun.PortHolder{}, false
	}
	if ip := net.ParseIP(host); host != "" && host != "localhost" && (ip == nil || !ip.IsLoopback() && !ip.IsUnspecified()) {
		return localrun.PortHolder{}, false
	}
	return localrun.FindPortHolder(p)
}

// MsgGRPCStopped and MsgHTTPStopped are the ERROR lines (ServeLogged) of a gRPC or plain HTTP
// server that stopped serving while its process runs on.
const (
	MsgGRPCStopped = "gRPC server stopped serving"
	MsgHTTPStopped = "HTTP server stopped serving"
)

// ServeLogged runs serve (a server's Serve on its listener: grpc.Server, http.Server) and returns
// its error, nil when the server was closed on purpose (serve returned nil, http.ErrServerClosed
// or grpc.ErrServerStopped). Any other error means the listener's Accept failed for good (both
// servers retry the temporary ones, such as too many open files) and nothing serves that address
// any more while the process runs on: it is logged at ERROR as msg (MsgGRPCStopped,
// MsgHTTPStopped, ...) with "addr" what (the flag and its address) and "err". A server's
// goroutine calls it: dropped, such an error left a process that answered nothing on the port
// and said nothing about it.
func ServeLogged(log *slog.Logger, msg, what string, serve func() error) error {
	err := serve()
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	log.Error(msg, "addr", what, "err", err)
	return err
}
