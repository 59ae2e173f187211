package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/tlsauth"
	"ddpm/internal/version"
)

// coordinatorStartedMsg is the log message a coordinator writes once raft and gRPC are up;
// `ddpm local` reads it to tell a coordinator that started from one failing at start-up.
const coordinatorStartedMsg = "coordinator started"

// coordinatorCmd runs one coordinator replica.
var coordinatorCmd = &cobra.Command{
	Use:   "coordinator",
	Short: "Run one raft replica of the coordinator (membership, generations, checkpoints)",
	Long: `Run one replica of the raft-replicated coordinator. Start 1, 3 or 5 of them with the same
--peers list (id=raftaddr=grpcaddr,...) and --bootstrap on a fresh cluster. The run config comes
from --config run.yaml and/or the run flags (--preset, --dataset, ...), and is submitted once a
leader is elected. A coordinator serves one run for the life of its --data-dir: given another
run config than the one its raft data or the cluster already holds, it exits with status 2
naming both config hashes (restart it with the run's config, or with fresh data dirs for a
new run). Replicas of releases with different state machine rules must not run one cluster: a
replica that follows a leader of other rules, or whose raft log a newer release led, exits with
status 2 naming both releases (upgrade a run whole: README, "Upgrading ddpm"). Damaged raft data
in --data-dir, or a raft.db that cannot be written, ends the replica with status 1 and one line
naming the file: move such a --data-dir aside and start the replica again with the same --id
and --peers, and it catches up from the other replicas. A --peers list other than the raft
configuration in --data-dir (or, for a new --data-dir, than the configuration the other
replicas of --peers already run: they are asked for up to --peers-wait, and ones that do not
answer are passed over), an --http-addr, --grpc-addr or --raft-addr that is not host:port, a
--data-dir another process holds (the replica started twice) and an address that cannot be
bound (the port in use: its holder is named) exit with status 2 and one line, before raft
starts. The start line names --http-addr as bound (for 127.0.0.1:0, the port it got). Every
flag can also come from the environment as DDPM_<FLAG> (for example DDPM_PEERS, DDPM_DATA_DIR,
DDPM_CERTS). Links are mutual TLS with the --certs directory; plain
text only with --insecure. --http-tls serves --http-addr over HTTPS with the --certs node
certificate: /healthz and /readyz to anyone, everything else (the dashboard, /api/*, /metrics)
only to a client certificate of the cluster's CA, of role operator or coordinator or none.`,
	Args: cobra.NoArgs,
	RunE: runCoordinator,
}

// runFlagNames are the flags config.AddFlags registers (set in init).
var runFlagNames = map[string]bool{}

var coordFlags struct {
	id, raftAddr, grpcAddr, httpAddr, peers, dataDir string
	bootstrap, raftLog, httpTLS                      bool
	rules                                            int
	peersWait                                        time.Duration
	run                                              *config.Flags
	sec                                              *tlsauth.Config
}

func init() {
	f := coordinatorCmd.Flags()
	f.StringVar(&coordFlags.id, "id", "", "this replica's id (must appear in --peers)")
	f.StringVar(&coordFlags.raftAddr, "raft-addr", "", "raft TCP address to listen on and advertise (ip:port)")
	f.StringVar(&coordFlags.grpcAddr, "grpc-addr", "", "gRPC listen address (host:port)")
	f.StringVar(&coordFlags.httpAddr, "http-addr", "", "HTTP listen address for /healthz, /readyz and /api/status (empty: none)")
	f.BoolVar(&coordFlags.httpTLS, "http-tls", false, httpTLSUsage)
	f.StringVar(&coordFlags.peers, "peers", "", "every replica as id=raftaddr=grpcaddr, comma-separated")
	f.StringVar(&coordFlags.dataDir, "data-dir", "", "directory for the raft log (bbolt) and snapshots, of its own (not a ddpm local run folder or a trainer's)")
	f.BoolVar(&coordFlags.bootstrap, "bootstrap", false, "write the initial cluster configuration if the data dir is empty")
	f.DurationVar(&coordFlags.peersWait, "peers-wait", coordinator.DefaultPeersWait,
		"on a new --data-dir, how long to ask the other replicas of --peers which cluster they run (above 0: the check cannot be turned off)")
	f.BoolVar(&coordFlags.raftLog, "raft-log", false, "print hashicorp/raft's own log lines")
	// Tests of mixed-release clusters play a replica of another release with it; hidden, since
	// claiming other rules than the binary's defeats the guard it tests.
	f.IntVar(&coordFlags.rules, "rules-version", 0, "state machine rules version to claim (testing; 0: this binary's)")
	if err := f.MarkHidden("rules-version"); err != nil {
		panic("ddpm: " + err.Error())
	}
	before := map[string]bool{}
	f.VisitAll(func(fl *pflag.Flag) { before[fl.Name] = true })
	coordFlags.run = config.AddFlags(f)
	f.VisitAll(func(fl *pflag.Flag) {
		if !before[fl.Name] {
			runFlagNames[fl.Name] = true
		}
	})
	coordFlags.sec = tlsauth.AddFlags(f)
	rootCmd.AddCommand(coordinatorCmd)
}

// flagsFromEnv sets every flag the command line left unset from DDPM_<NAME> if present.
func flagsFromEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || err != nil {
			return
		}
		key := envKey(fl.Name)
		if v, ok := os.LookupEnv(key); ok {
			if e := fs.Set(fl.Name, v); e != nil {
				if _, problem := flagValueProblem(e); problem != "" {
					err = fmt.Errorf("%s=%q (--%s): %s", key, v, fl.Name, problem)
				} else {
					err = fmt.Errorf("%s=%q: %v", key, v, e)
				}
			}
		}
	})
	return err
}

func newLogger() *slog.Logger {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, nil))
}

func runCoordinator(cmd *cobra.Command, _ []string) error {
	fs := cmd.Flags()
	onCmdline := changedFlags(fs)
	if err := flagsFromEnv(fs); err != nil {
		return withExit(2, err)
	}
	if err := checkHTTPTLS("coordinator", coordFlags.httpTLS, coordFlags.httpAddr, coordFlags.sec, onCmdline); err != nil {
		return err
	}
	for _, req := range []struct{ name, val string }{{"id", coordFlags.id}, {"raft-addr", coordFlags.raftAddr},
		{"grpc-addr", coordFlags.grpcAddr}, {"peers", coordFlags.peers}, {"data-dir", coordFlags.dataDir}} {
		if req.val == "" {
			return withExit(2, fmt.Errorf("coordinator: --%s is required", req.name))
		}
	}
	// An address net.Listen cannot read is a mistake of the command, refused before anything
	// binds (it was exit 1 from the node's bind, and 2 from --http-tls's).
	for _, a := range []struct{ name, val string }{{"raft-addr", coordFlags.raftAddr}, {"grpc-addr", coordFlags.grpcAddr},
		{"http-addr", coordFlags.httpAddr}} {
		if a.val == "" {
			continue
		}
		why := coordinator.ListenAddrProblem(a.val)
		switch {
		case why == "":
		case onCmdline[a.name]:
			return withExit(2, coordinator.CheckListenAddr("--"+a.name, a.val))
		default: // as flagsFromEnv says a variable it cannot set
			return withExit(2, fmt.Errorf("coordinator: %s=%q (--%s): %w (%s)", envKey(a.name), a.val, a.name, coordinator.ErrBadAddr, why))
		}
	}
	if err := checkDistinctPorts("coordinator", "--raft-addr", coordFlags.raftAddr, "--grpc-addr", coordFlags.grpcAddr, "--http-addr", coordFlags.httpAddr); err != nil {
		return withExit(2, err)
	}
	// A ddpm local run folder or a trainer's folder given as the data dir: refused before
	// anything (the test-split check's look at the raft data included) reads or writes there.
	if err := coordinator.CheckDataDir(coordFlags.dataDir); err != nil {
		return withExit(2, err)
	}
	if coordFlags.peersWait <= 0 {
		return withExit(2, fmt.Errorf("coordinator: --peers-wait %v: want a duration above 0, such as %v", coordFlags.peersWait, coordinator.DefaultPeersWait))
	}
	if coordFlags.rules < 0 {
		return withExit(2, fmt.Errorf("coordinator: --rules-version %d: want 0 (this binary's) or more", coordFlags.rules))
	}
	peers, err := coordinator.ParsePeers(coordFlags.peers)
	if err != nil {
		return withExit(2, fmt.Errorf("--peers: %w", err))
	}
	if err := checkOwnPeer(peers, coordFlags.id, coordFlags.raftAddr, coordFlags.grpcAddr); err != nil {
		return withExit(2, err)
	}
	var run *config.Run
	var runSource string
	if coordFlags.run.Given() {
		r, err := coordFlags.run.Resolve()
		if err != nil {
			return withExit(2, err)
		}
		// A dataset path is kept as given: the trainers read it on their machines, where the
		// coordinator's working directory means nothing. Its split means the same everywhere:
		// a new run on a test split is refused; the restart of a replica whose data dir holds
		// that very run (one an older version accepted) goes on.
		if err := checkTrainSplit(r.Dataset); err != nil {
			held, herr := coordinator.HoldsRun(coordFlags.dataDir, r)
			if herr != nil {
				// The data dir cannot be read (another coordinator on it, exit 2; damaged, exit
				// 1): that is the line.
				return withExit(coordinatorStartStatus(herr), herr)
			}
			if !held {
				return withExit(2, err)
			}
		}
		run, runSource = &r, runFlagsSource(fs, coordFlags.run.Path)
	}
	log := newLogger().With("role", "coordinator", "id", coordFlags.id)
	sec, err := loadSecurity(coordFlags.sec, log)
	if err != nil {
		return err
	}
	if err := certRoleFor(sec, "coordinator", tlsauth.RoleCoordinator, coordFlags.sec.Dir); err != nil {
		return err
	}
	var raftLog *os.File
	if coordFlags.raftLog {
		raftLog = os.Stderr
	}
	// With --http-tls this process serves the node's mux itself, over HTTPS, on a port it binds
	// before the node starts (a taken port stops it before raft starts, as the node's own would).
	nodeHTTP := coordFlags.httpAddr
	var https net.Listener
	if coordFlags.httpTLS {
		if https, err = listenHTTPS(coordFlags.httpAddr); err != nil {
			return err
		}
		defer https.Close()
		nodeHTTP = ""
	}
	cfg := coordinator.NodeConfig{ID: coordFlags.id, RaftAddr: coordFlags.raftAddr, GRPCAddr: coordFlags.grpcAddr,
		HTTPAddr: nodeHTTP, Peers: peers, DataDir: coordFlags.dataDir, Bootstrap: coordFlags.bootstrap, PeersWait: coordFlags.peersWait,
		Run: run, RunSource: runSource, Version: version.Version, Rules: coordFlags.rules, Logger: log, Security: sec}
	if raftLog != nil {
		cfg.RaftLog = raftLog
	}
	// Signals are caught from before the start line: a SIGTERM sent on seeing it closes the
	// replica cleanly (it used to end the process by the signal's default action).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	node, err := coordinator.StartNode(cfg)
	if err != nil {
		return withExit(coordinatorStartStatus(err), err)
	}
	if https != nil {
		srv, err := sec.HTTPServer(node.Mux())
		if err != nil {
			node.Close()
			return withExit(2, err)
		}
		go serveHTTPS(srv, https, coordinator.FlagAddr("--http-addr", coordFlags.httpAddr, https.Addr().String()), log)
		defer srv.Close()
	}
	// The HTTP address as bound: --http-addr 127.0.0.1:0 reads as the port it got, which a
	// probe or a person then asks.
	httpBound := node.HTTPAddr()
	if https != nil {
		httpBound = https.Addr().String()
	}
	log.Info(coordinatorStartedMsg, "raft", coordFlags.raftAddr, "grpc", coordFlags.grpcAddr, "http", httpBound,
		"http_tls", coordFlags.httpTLS, "peers", len(peers), "version", version.Version, "security", sec.String())
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
		return node.Close()
	case err := <-node.Fatal():
		node.Close()
		return withExit(fatalStatus(err), err)
	}
}

// coordinatorStartStatus is the exit status for an error of coordinator.StartNode: 2 (the
// command to change) for another run's config, another release's raft log, a folder of another
// role, a --peers list that is not the cluster's, an address that cannot be bound and a data dir
// another process holds (the replica started twice, two replicas on one --data-dir); 1 for
// the rest (damaged raft data, a disk that refuses writes).
func coordinatorStartStatus(err error) int {
	var conflict *coordinator.RunConflictError
	for _, user := range []error{coordinator.ErrReleaseMismatch, coordinator.ErrNotDataDir, coordinator.ErrPeersMismatch,
		coordinator.ErrListen, coordinator.ErrDataDirInUse, coordinator.ErrRaftAddr, coordinator.ErrBadAddr} {
		if errors.Is(err, user) {
			return 2
		}
	}
	if errors.As(err, &conflict) {
		return 2
	}
	return 1
}

// fatalStatus is the exit status for an error on coordinator.Node.Fatal: 1 when raft could not
// write its store or the gRPC server stopped serving (operational failures; the other replicas
// keep the run, and a restart may serve again), 2 (a config to change) when the cluster runs
// another config or its leader another release's rules.
func fatalStatus(err error) int {
	if errors.Is(err, coordinator.ErrStoreWrite) || errors.Is(err, coordinator.ErrGRPCStopped) {
		return 1
	}
	return 2
}

// runFlagsSource names where the run config came from for a refusal: the --config file, or the
// preset and flags; "(with flags)" when run flags override the file's fields.
func runFlagsSource(fs *pflag.FlagSet, path string) string {
	other := false
	fs.Visit(func(fl *pflag.Flag) {
		if fl.Name != "config" && runFlagNames[fl.Name] {
			other = true
		}
	})
	switch {
	case path == "":
		p, _ := fs.GetString("preset")
		return "--preset " + p + " with the run flags"
	case other:
		return "--config " + path + " with the run flags"
	}
	return "--config " + path
}

// checkDistinctPorts refuses two of a process's listen addresses (pairs of flag and address:
// a replica's --raft-addr, --grpc-addr and --http-addr, a trainer's --listen and --http-addr;
// empty ones and port 0, any free port, skipped) naming one listener (sameEndpoint): the second
// bind would fail as a port in use by this very process, a line that named the process itself
// (and, for a replica, advised changing --peers in every replica). process prefixes the line.
func checkDistinctPorts(process string, flagAddrs ...string) error {
	for i := 0; i+1 < len(flagAddrs); i += 2 {
		for j := i + 2; j+1 < len(flagAddrs); j += 2 {
			a, b := flagAddrs[i+1], flagAddrs[j+1]
			if fixedPort(a) && fixedPort(b) && sameEndpoint(a, b) {
				return fmt.Errorf("%s: %s %s and %s %s name one port: give each its own port", process, flagAddrs[i], a, flagAddrs[j], b)
			}
		}
	}
	return nil
}

// fixedPort reports whether addr names a port of its own: given, and not port 0 (any free port).
func fixedPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return addr != "" && (err != nil || port != "0")
}

// checkOwnPeer checks that --peers lists --id at this process's own --raft-addr and --grpc-addr
// (same port; the same IP where both name one): a replica started with another replica's id
// would otherwise run as a second copy of it, voting in raft under its name.
func checkOwnPeer(peers []coordinator.Peer, id, raftAddr, grpcAddr string) error {
	var ids []string
	for _, p := range peers {
		if p.ID != id {
			ids = append(ids, p.ID)
			continue
		}
		for _, a := range []struct{ flag, own, listed, what string }{
			{"--raft-addr", raftAddr, p.RaftAddr, "raft"}, {"--grpc-addr", grpcAddr, p.GRPCAddr, "gRPC"}} {
			if !sameEndpoint(a.own, a.listed) {
				return fmt.Errorf("%s %s is not %s's %s address in --peers (%s): give each replica its own --id", a.flag, a.own, id, a.what, a.listed)
			}
		}
		return nil
	}
	return fmt.Errorf("--id %s is not among --peers (%s)", id, strings.Join(ids, ", "))
}

// sameEndpoint reports whether two host:port addresses can name one listener: equal ports, and
// equal hosts where both are IPs (a DNS name, as in Kubernetes peer lists, is not resolved; a
// wildcard listen IP such as 0.0.0.0 matches any).
func sameEndpoint(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return a == b
	}
	if pa != pb {
		return false
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	return ia == nil || ib == nil || ia.IsUnspecified() || ib.IsUnspecified() || ia.Equal(ib)
}

// httpTLSUsage is the help line of --http-tls (ddpm coordinator, ddpm trainer).
const httpTLSUsage = "serve --http-addr over HTTPS with the --certs node certificate; every path but /healthz and /readyz " +
	"then needs a client certificate of the cluster's CA, of role operator or coordinator or none"

// envKey is the environment variable a flag (its name without dashes) is read from when the
// command line leaves it unset: DDPM_<NAME>, dashes as underscores.
func envKey(name string) string {
	return "DDPM_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// changedFlags returns the names of the flags set on fs so far (before flagsFromEnv: those of
// the command line).
func changedFlags(fs *pflag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(fl *pflag.Flag) { set[fl.Name] = true })
	return set
}

// checkHTTPTLS refuses, with one line and exit status 2, an --http-tls that cannot serve:
// without --http-addr, without --certs, or with --insecure (onCmdline names the flags the
// command line set; others came from DDPM_<FLAG>, which the line then names). process is
// "coordinator" or "trainer". Nil when httpTLS is off.
func checkHTTPTLS(process string, httpTLS bool, httpAddr string, sec *tlsauth.Config, onCmdline map[string]bool) error {
	if !httpTLS {
		return nil
	}
	given := "--http-tls"
	if !onCmdline["http-tls"] {
		given = "DDPM_HTTP_TLS"
	}
	switch {
	case httpAddr == "":
		return withExit(2, fmt.Errorf("%s: %s needs --http-addr, the address to serve HTTPS on", process, given))
	case sec.Insecure:
		insecure := "--insecure"
		if !onCmdline["insecure"] {
			insecure = "DDPM_INSECURE in the environment"
		}
		return withExit(2, fmt.Errorf("%s: %s needs --certs DIR, whose node certificate it serves and whose CA checks the clients; %s gives neither", process, given, insecure))
	case sec.Dir == "":
		return withExit(2, fmt.Errorf("%s: %s needs --certs DIR, whose node certificate it serves and whose CA checks the clients", process, given))
	}
	return nil
}

// listenHTTPS binds --http-addr for --http-tls with the node's own binding
// (coordinator.ListenFlag, one wording for every port of a replica): a port a program listens
// on, an IP of no interface or a privileged port, exit 2 naming it; one held only by a
// connection or a TIME_WAIT, exit 1 (it frees by itself; ddpm local and Kubernetes restart);
// any other error of net.Listen (an address that does not parse), exit 2.
func listenHTTPS(addr string) (net.Listener, error) {
	l, err := coordinator.ListenFlag("--http-addr", addr)
	switch {
	case err == nil:
		return l, nil
	case errors.Is(err, coordinator.ErrPortHeldForNow):
		return nil, withExit(1, err)
	}
	return nil, withExit(2, err)
}

// MsgHTTPSStopped is the ERROR line of an --http-tls server that stopped serving while its
// process runs on (an accept error net/http gives up on): the probes then fail, and this says why.
const MsgHTTPSStopped = "HTTPS server stopped serving"

// serveHTTPS serves srv (tlsauth.Bundle.HTTPServer) over TLS on l until srv is closed, and logs
// MsgHTTPSStopped at ERROR naming what (the flag and address) when it stops for any other reason.
func serveHTTPS(srv *http.Server, l net.Listener, what string, log *slog.Logger) {
	coordinator.ServeLogged(log, MsgHTTPSStopped, what, func() error { return srv.ServeTLS(l, "", "") })
}
