package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/coordinator/web"
	"ddpm/internal/flockholder"
	"ddpm/internal/tlsauth"
)

// NodeConfig configures one coordinator process.
type NodeConfig struct {
	ID       string
	RaftAddr string // listen address for raft's TCP transport; also advertised (must be an IP)
	GRPCAddr string // listen address of the gRPC service
	HTTPAddr string // listen address of the HTTP endpoints; "" for none
	Peers    []Peer // every replica, this one included
	DataDir  string // raft.db (bbolt log + stable store) and snapshots/
	// Bootstrap writes the initial cluster configuration when DataDir is empty.
	Bootstrap bool
	// PeersWait bounds how long a replica on a DataDir without raft.db asks the other Peers for
	// the raft configuration they run before it writes anything (0: DefaultPeersWait).
	PeersWait time.Duration
	// Run, when set, is submitted once a leader is elected (a no-op if already in force). A
	// coordinator serves one run for the life of its raft data: a different run already in
	// force is refused with a *RunConflictError, by StartNode when DataDir's raft data holds
	// it, else on Fatal once the cluster's state shows it.
	Run *config.Run
	// RunSource names where Run came from in messages, such as "--config run.yaml"
	// (default "the given run config").
	RunSource string
	// Version is this binary's version; joining trainers must match it, and the replica's
	// release records name it (default internal/version.Version).
	Version string
	// Rules is the state machine rules version the replica applies the log under (default
	// fsm.RulesVersion; ReplicaConfig.Rules).
	Rules int
	// Raft overrides the raft tuning (nil: FastRaftConfig).
	Raft    *raft.Config
	Logger  *slog.Logger
	RaftLog io.Writer
	// Security secures the raft transport, the gRPC service and the connections this node makes
	// (leader forwarding, run submission). Required: tlsauth.Load with --certs, or with Insecure
	// for explicit plain text.
	Security *tlsauth.Bundle
}

// ParsePeers parses "id=raftaddr=grpcaddr,..." (the --peers flag).
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, "=")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("%w: %q is not id=raftaddr=grpcaddr", ErrBadPeers, item)
		}
		peers = append(peers, Peer{ID: parts[0], RaftAddr: parts[1], GRPCAddr: parts[2]})
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadPeers)
	}
	return peers, nil
}

// raftDBLockTimeout bounds the wait for raft.db's file lock: a second coordinator started on the
// same data dir fails with a clear error instead of blocking forever.
const raftDBLockTimeout = time.Second

// RunConflictError is the refusal of a coordinator whose NodeConfig.Run differs from the run
// config already in force: StartNode returns it when the raft data in DataDir holds another run
// (found before raft starts, so nothing there is written), and Node.Fatal carries it when the
// cluster's replicated state shows one (a replica with an empty or older log, learning it from
// the leader). errors.Is(err, fsm.ErrConfigMismatch) holds.
type RunConflictError struct {
	// Where names the holder of the run in force: "--data-dir DIR" or "the cluster".
	Where string
	// InForce is the run config in force; nil when this replica has not learnt it (the leader
	// refused the submission, and the run did not reach this replica within a few seconds).
	InForce *config.Run
	// InForceHash and GivenHash are the SHA-256 config hashes (config.Run.Hash) of the run in
	// force ("" with InForce nil) and of NodeConfig.Run.
	InForceHash, GivenHash string
	// Given is NodeConfig.RunSource.
	Given string
	// GivenRun is NodeConfig.Run as the state machine would hold it (its YAML parsed back); with
	// InForce, the refusal names the keys in which they differ and both values. Nil: not named.
	GivenRun *config.Run
	// Fresh: the run in force has had no trainer join and no step yet, so it may be the
	// mistake (the first replica to start submits its own config, a typo included).
	Fresh bool
}

func (e *RunConflictError) Error() string {
	what := "another config"
	if e.InForce != nil {
		what = fmt.Sprintf("config %.12s (preset %s, model %s, dataset %s, %d steps)", e.InForceHash,
			orDash(e.InForce.Preset), e.InForce.Model, e.InForce.Dataset, e.InForce.Steps)
	}
	fix := "restart it with that run's config, or with a fresh --data-dir on every replica for a new run"
	switch {
	case e.Where == "the cluster" && e.Fresh:
		fix = "no trainer has joined yet, so if the cluster's config is the mistake (the first replica to start " +
			"submits its own), stop every replica, empty their --data-dir and start them all with one config; " +
			"else start this replica with the cluster's run config"
	case e.Where == "the cluster":
		fix = "start this replica with the cluster's run config (every replica needs the same one)"
	}
	return fmt.Sprintf("coordinator: %s runs %s, but %s is config %.12s%s: %s", e.Where, what, e.Given, e.GivenHash, e.differ(), fix)
}

// maxDifferKeys is how many differing keys a RunConflictError names; more are counted.
const maxDifferKeys = 4

// differ names the run config keys (the YAML keys of a run.yaml, alphabetical) in which GivenRun
// differs from InForce, with both values: " (it has steps: 200 where the cluster has 100, ...)";
// "" when either is unknown or none differs.
func (e *RunConflictError) differ() string {
	if e.InForce == nil || e.GivenRun == nil {
		return ""
	}
	var held, given map[string]json.RawMessage
	hb, err1 := json.Marshal(e.InForce)
	gb, err2 := json.Marshal(e.GivenRun)
	if err1 != nil || err2 != nil || json.Unmarshal(hb, &held) != nil || json.Unmarshal(gb, &given) != nil {
		return ""
	}
	keys := map[string]bool{}
	for k := range held {
		keys[k] = true
	}
	for k := range given {
		keys[k] = true
	}
	where := "the cluster"
	if e.Where != "the cluster" {
		where = "the data dir"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		h, g := held[k], given[k]
		if bytes.Equal(h, g) {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s where %s has %s", k, orUnset(g), where, orUnset(h)))
	}
	switch {
	case len(parts) == 0:
		return ""
	case len(parts) > maxDifferKeys:
		parts = append(parts[:maxDifferKeys], fmt.Sprintf("and %d more keys", len(parts)-maxDifferKeys))
	}
	return " (it has " + strings.Join(parts, ", ") + ")"
}

// orUnset is a JSON value as the refusal shows it; "(unset)" for a key one side leaves out.
func orUnset(v json.RawMessage) string {
	if v == nil {
		return "(unset)"
	}
	return string(v)
}

// Unwrap returns fsm.ErrConfigMismatch.
func (e *RunConflictError) Unwrap() error { return fsm.ErrConfigMismatch }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// wireHash is the hash the state machine gives run when it arrives in a submission (its YAML
// parsed back), which is what a run in force is compared with.
func wireHash(run config.Run) string {
	r := wireRun(run)
	return r.Hash()
}

// wireRun is run as the state machine holds it once submitted: its YAML parsed back (run
// itself where that fails).
func wireRun(run config.Run) *config.Run {
	if r, err := config.Parse(run.Marshal()); err == nil {
		return &r
	}
	return &run
}

// HoldsRun reports whether the raft data in dataDir holds run (the same config hash as the
// replica compares at start; see runOnDisk): a restart of a replica of that run, not a new one.
// dataDir without raft data holds none. The error is that of reading the data (another process
// holding raft.db, a damaged store).
func HoldsRun(dataDir string, run config.Run) (bool, error) {
	if err := checkRaftData(dataDir); err != nil {
		return false, err
	}
	held, hash, err := runOnDisk(dataDir)
	if err != nil || held == nil {
		return false, err
	}
	return hash == wireHash(run), nil
}

// inUse is the error of a raft.db whose file lock another process holds; it matches
// ErrDataDirInUse.
func inUse(dbPath, dataDir string) error {
	by := "another process"
	if pid := flockholder.PID(dbPath); pid > 0 {
		by = "process " + strconv.Itoa(pid)
	}
	return fmt.Errorf("coordinator: %s is %w by %s (another coordinator on --data-dir %s?)", dbPath, ErrDataDirInUse, by, dataDir)
}

// diskRemedy is what to do about err, a write to dataDir that failed, when the disk is full (or
// a quota or the process's file size limit is reached): ": free space ...", else "".
func diskRemedy(dataDir string, err error) string {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Sprintf(": free space on the disk of --data-dir %s (or raise the file size limit, ulimit -f), then start this replica again", dataDir)
	}
	return ""
}

// openError is the error of opening the raft store dbPath: the operating system's refusal
// already names the file ("open PATH: permission denied"); bbolt's own errors do not.
// A full disk (or quota, or file size limit) gets the remedy: free space on --data-dir's disk.
func openError(dbPath string, err error) error {
	remedy := diskRemedy(filepath.Dir(dbPath), err)
	if strings.Contains(err.Error(), dbPath) {
		return fmt.Errorf("coordinator: %w%s", err, remedy)
	}
	return fmt.Errorf("coordinator: open %s: %w%s", dbPath, err, remedy)
}

// runOnDisk returns the run config held by the raft data in dataDir (nil, "" when none): the
// newest readable snapshot's state, then the log entries after it replayed through fsm.Apply as
// raft will once it knows them committed, stopping at the first that sets a run (a run, once
// set, never changes). It opens raft.db read-only and writes nothing there; raft's snapshot
// store, opened to read the snapshots, creates and removes snapshots/permTest (its permissions
// probe, which StartNode's own store repeats next; one left by a crash is skipped by the
// listing and removed by the next start: TestLeftoverSnapshotProbe). An entry that is in
// the log but not yet committed counts too: a replica cannot tell, and such an entry comes from
// a run submitted to this very replica. The data must have passed checkRaftData.
func runOnDisk(dataDir string) (*config.Run, string, error) {
	dbPath := filepath.Join(dataDir, "raft.db")
	if _, err := os.Stat(dbPath); errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: dbPath,
		BoltOptions: &bolt.Options{ReadOnly: true, Timeout: raftDBLockTimeout}})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, "", inUse(dbPath, dataDir)
	case err != nil:
		return nil, "", openError(dbPath, err)
	}
	defer store.Close()
	state, from := fsm.New(), uint64(0)
	if _, err := os.Stat(filepath.Join(dataDir, "snapshots")); err == nil {
		snaps, err := raft.NewFileSnapshotStore(dataDir, 2, io.Discard)
		if err != nil {
			return nil, "", fmt.Errorf("coordinator: snapshots: %w", err)
		}
		metas, err := snaps.List()
		if err != nil {
			return nil, "", fmt.Errorf("coordinator: snapshots: %w", err)
		}
		// Newest first; raft itself falls back to an older one when the newest is unreadable.
		for _, m := range metas {
			if s, ok := readSnapshot(snaps, m.ID); ok {
				state, from = s, m.Index
				break
			}
		}
	}
	if state.Run != nil {
		return state.Run, state.ConfigHash, nil
	}
	first, err := store.FirstIndex()
	if err != nil {
		return nil, "", fmt.Errorf("coordinator: read %s: %w", dbPath, err)
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, "", fmt.Errorf("coordinator: read %s: %w", dbPath, err)
	}
	for i := max(first, from+1); i != 0 && i <= last; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			return nil, "", fmt.Errorf("coordinator: read %s entry %d: %w", dbPath, i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := fsm.DecodeCommand(l.Data)
		if err != nil {
			continue // every replica refuses it alike
		}
		fsm.Apply(state, c)
		if state.Run != nil {
			return state.Run, state.ConfigHash, nil
		}
	}
	return nil, "", nil
}

// readSnapshot decodes the state of snapshot id; ok false when it cannot be read.
func readSnapshot(snaps raft.SnapshotStore, id string) (*fsm.State, bool) {
	_, rc, err := snaps.Open(id)
	if err != nil {
		return nil, false
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, false
	}
	s, err := fsm.Decode(b)
	return s, err == nil
}

// Node is a running coordinator process: replica, gRPC and HTTP servers.
type Node struct {
	cfg     NodeConfig
	given   string     // wireHash(*cfg.Run); "" without a run
	fatal   chan error // the error that ends this node's service (buffered, at most one)
	Replica *Replica
	server  *Server
	grpcSrv *grpc.Server
	httpSrv *http.Server
	// httpBound is the address the HTTP listener got (HTTPAddr's port 0 resolved); "" without.
	httpBound string
	mux       *http.ServeMux
	store     *guardedStore
	trans     *raft.NetworkTransport
	// raftGuard bounds the raft connections awaiting authentication (MaxRaftPending).
	raftGuard *raftGuard
	// dbInfo is raft.db as opened; dbGone compares the path's file with it.
	dbInfo os.FileInfo
	cancel context.CancelFunc
	done   chan struct{}
	// grpcDown is the error (ErrGRPCStopped) once the gRPC server stopped serving; /readyz names it.
	grpcDown atomic.Pointer[error]
}

// StartNode opens the stores in DataDir, starts raft and the listeners, and (when cfg.Run is
// set) submits the run config in the background. Errors name what failed; a DataDir that is
// another of ddpm's folders is refused before anything is written (CheckDataDir, ErrNotDataDir).
func StartNode(cfg NodeConfig) (_ *Node, err error) {
	if cfg.Security == nil {
		panic("coordinator: NodeConfig.Security is nil (tlsauth.Load it; plain text only with Config.Insecure)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RunSource == "" {
		cfg.RunSource = "the given run config"
	}
	n := &Node{cfg: cfg, done: make(chan struct{}), fatal: make(chan error, 1)}
	if err := CheckDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := checkRaftData(cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.Run != nil {
		n.given = wireHash(*cfg.Run)
		run, hash, err := runOnDisk(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		if run != nil && hash != n.given {
			return nil, &RunConflictError{Where: "--data-dir " + cfg.DataDir, InForce: run, InForceHash: hash, GivenRun: wireRun(*cfg.Run),
				Given: cfg.RunSource, GivenHash: n.given}
		}
	}
	for _, a := range []struct{ flag, addr string }{{"--raft-addr", cfg.RaftAddr}, {"--grpc-addr", cfg.GRPCAddr}, {"--http-addr", cfg.HTTPAddr}} {
		if a.addr == "" && a.flag == "--http-addr" {
			continue
		}
		if err := CheckListenAddr(a.flag, a.addr); err != nil {
			return nil, err
		}
	}
	// Before the ports are bound (a replica starting beside this one then refuses the
	// connection at once, rather than holding it unanswered until it serves).
	if err := checkRunningPeers(cfg); err != nil {
		return nil, err
	}
	// Every port is bound before raft starts: a port in use (the replica started twice, another
	// program on it) ends the start-up before this replica votes or campaigns, or writes
	// anything into a new --data-dir.
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft address %q: %w", cfg.RaftAddr, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("coordinator: --raft-addr %s: %w (raft advertises it to them)", cfg.RaftAddr, ErrRaftAddr)
	}
	var rln, lis, hl net.Listener // nil once a server or the raft transport owns it
	defer func() {
		if err != nil {
			for _, l := range []net.Listener{rln, lis, hl} {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	if rln, err = ListenFlag("--raft-addr", cfg.RaftAddr); err != nil {
		return nil, err
	}
	if lis, err = ListenFlag("--grpc-addr", cfg.GRPCAddr); err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		if hl, err = ListenFlag("--http-addr", cfg.HTTPAddr); err != nil {
			return nil, err
		}
		n.httpBound = hl.Addr().String()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("coordinator: data dir: %w", err)
	}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	bs, err := raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bolt.Options{Timeout: raftDBLockTimeout}})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, inUse(dbPath, cfg.DataDir)
	case err != nil:
		return nil, openError(dbPath, err)
	}
	n.store = newGuardedStore(bs, dbPath, cfg.Logger, n.fail)
	if n.dbInfo, err = os.Stat(dbPath); err != nil {
		return nil, openError(dbPath, err)
	}
	raftLog := cfg.RaftLog
	if raftLog == nil {
		raftLog = io.Discard
	}
	if err := removeSnapshotTemps(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("coordinator: snapshots: %w", err)
	}
	fss, err := raft.NewFileSnapshotStore(cfg.DataDir, 2, raftLog)
	if err != nil {
		return nil, fmt.Errorf("coordinator: snapshots: %w", err)
	}
	snaps := &guardedSnapshots{FileSnapshotStore: fss, dir: filepath.Join(cfg.DataDir, "snapshots"), g: n.store}
	n.raftGuard = cfg.Security.RaftStreamLayer(rln, adv)
	// MaxRPCsInFlight 1: no pipelined replication. hashicorp/raft's pipeline wedges when a
	// follower answers an AppendEntries with Success=false, as a replica whose raft.db cannot
	// store entries does: the leader stops replicating to it for good while heartbeats still
	// flow, so it never catches up, and the leader's shutdown hangs on it (hashicorp/raft#612).
	// Each batch of entries then waits for its answer, one round trip.
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: n.raftGuard, MaxPool: 3,
		Timeout: 2 * time.Second, MaxRPCsInFlight: 1,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "raft-net", Output: raftLog, Level: hclog.DefaultLevel})})
	rln = nil // the transport closes it
	n.Replica, err = newReplicaOnDisk(cfg.DataDir, ReplicaConfig{ID: cfg.ID, Peers: cfg.Peers, Bootstrap: cfg.Bootstrap, Raft: cfg.Raft,
		LogStore: n.store, StableStore: n.store, Snapshots: snaps, Transport: n.trans, Logger: cfg.Logger, RaftLog: cfg.RaftLog,
		Version: cfg.Version, Rules: cfg.Rules}, n.store)
	if err != nil {
		return nil, err
	}
	if err := checkHeldPeers(n.Replica.raft, cfg.Peers, cfg.DataDir); err != nil {
		return nil, err
	}
	n.store.arm()
	n.server = NewServer(n.Replica, cfg.Version, cfg.Security)
	n.server.storeFailing = n.store.Failing
	n.grpcSrv = grpc.NewServer(append(cfg.Security.ServerOptions(), ServerOptions()...)...)
	api.RegisterCoordinatorServer(n.grpcSrv, n.server)
	go n.serveGRPC(lis)
	lis = nil // the server closes it
	n.mux = http.NewServeMux()
	n.mux.HandleFunc("GET /healthz", n.healthz)
	n.mux.HandleFunc("GET /readyz", n.readyz)
	n.mux.HandleFunc("GET /api/status", n.apiStatus)
	web.Mount(n.mux, n.Replica, web.Options{}) // dashboard /, /api/summary, /api/loss, /metrics
	if hl != nil {
		n.httpSrv = &http.Server{Handler: n.mux, ReadHeaderTimeout: 5 * time.Second}
		go n.serveHTTP(hl)
		hl = nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go n.submitLoop(ctx)
	go n.watchNoLeader(ctx, noLeaderWarnAfter)
	go n.watchRaftDB(ctx, raftDBCheckEvery)
	go n.watchHalt(ctx)
	return n, nil
}

// ErrGRPCStopped: the replica's gRPC server stopped serving while the replica ran (its
// listener's Accept failed for good). Trainers and ddpm's commands then get no answer from it on
// --grpc-addr, and as raft leader (raft has its own port, so it goes on voting and leading) it
// would keep the whole cluster's service out of reach. It comes on Fatal, and `ddpm coordinator`
// exits 1 (which ddpm local and Kubernetes restart: a new process binds the port again); /readyz
// answers 503 naming it until the node is closed.
var ErrGRPCStopped = errors.New("gRPC server stopped serving")

// serveGRPC serves the replica's gRPC API on lis until Close; a failure (ServeLogged's ERROR
// line) ends the node's service: Fatal gets an error matching ErrGRPCStopped.
func (n *Node) serveGRPC(lis net.Listener) {
	what := "--grpc-addr " + n.cfg.GRPCAddr
	if err := ServeLogged(n.cfg.Logger, MsgGRPCStopped, what, func() error { return n.grpcSrv.Serve(lis) }); err != nil {
		err = fmt.Errorf("coordinator: %w on %s: %v; stopping the replica (exit 1) so that a restart binds the port again",
			ErrGRPCStopped, what, err)
		n.grpcDown.Store(&err)
		n.fail(err)
	}
}

// serveHTTP serves the node's mux on hl until Close; a failure is ServeLogged's ERROR line only:
// the replica's service goes on, and where probes ask /healthz (Kubernetes) they fail, and the
// kubelet restarts the replica; the line says why.
func (n *Node) serveHTTP(hl net.Listener) {
	ServeLogged(n.cfg.Logger, MsgHTTPStopped, FlagAddr("--http-addr", n.cfg.HTTPAddr, n.httpBound), func() error { return n.httpSrv.Serve(hl) })
}

// HTTPAddr returns the host:port the HTTP endpoints (/healthz, /readyz, /api/status, the
// dashboard) listen on: NodeConfig.HTTPAddr as bound, so port 0 (any free port) reads as the
// port the kernel gave; "" when the node serves no HTTP.
func (n *Node) HTTPAddr() string { return n.httpBound }

// FlagAddr names a listen flag and its value for a log line, with the address bound where that
// differs from the value given (port 0, a wildcard or a name): "--http-addr :0 ([::]:41234)".
func FlagAddr(flag, given, bound string) string {
	if bound == "" || bound == given {
		return flag + " " + given
	}
	return flag + " " + given + " (" + bound + ")"
}

// watchHalt passes the replica's halt (a *ReleaseMismatchError: the leader runs other state
// machine rules) to Fatal.
func (n *Node) watchHalt(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-n.Replica.Halted():
		n.fail(n.Replica.HaltError())
	}
}

// fail hands err to Fatal unless an error already waits there.
func (n *Node) fail(err error) {
	select {
	case n.fatal <- err:
	default:
	}
}

// MsgNoConfigHint is MsgNoLeader's hint when the replica holds no raft configuration at all: its
// --data-dir is new and it was started without --bootstrap, so it never campaigns and, unless the
// running cluster's leader lists it, waits for ever (three new replicas all started without
// --bootstrap waited so with the other hint, which named --peers).
const MsgNoConfigHint = "this replica holds no raft configuration: start the replicas of a new cluster with --bootstrap " +
	"(one --peers for all); a replica the running cluster lists, started without it, waits until their leader reaches its raft address"

// raftDBCheckEvery is how often a running replica checks that its --data-dir still holds the
// raft.db it opened.
var raftDBCheckEvery = 2 * time.Second

// MsgRaftDBGone is the error a replica logs, once, when the raft.db it runs on is no longer in its
// --data-dir (the folder or the file removed, or another file put there), with the reason.
const MsgRaftDBGone = "raft.db is no longer in --data-dir"

// dbGone says how raft.db differs from the one this replica opened: "" while it is the same
// file; otherwise one line naming the path and what to do. The replica goes on with its open
// file, but that is gone once it stops, and it then starts empty and catches up from the others.
func (n *Node) dbGone() string {
	path := n.store.path
	fi, err := os.Stat(path)
	what := "removed"
	switch {
	case err == nil && os.SameFile(fi, n.dbInfo):
		return ""
	case err == nil:
		what = "replaced by another file"
	case !errors.Is(err, os.ErrNotExist):
		what = "unreadable (" + err.Error() + ")"
	}
	return fmt.Sprintf("%s %s while this replica runs: it goes on with its open file, which is lost when it stops; "+
		"stopped, it starts again empty and catches up from the other replicas (if they are up)", path, what)
}

// watchRaftDB logs MsgRaftDBGone at ERROR once when raft.db leaves --data-dir (/readyz answers
// 503 from then on).
func (n *Node) watchRaftDB(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if why := n.dbGone(); why != "" {
			n.cfg.Logger.Error(MsgRaftDBGone, "data_dir", n.cfg.DataDir, "why", why)
			return
		}
	}
}

// noLeaderWarnAfter is how long a replica may know no raft leader before it says so.
var noLeaderWarnAfter = 10 * time.Second

// MsgNoLeader is the warning of a replica that has known no raft leader for noLeaderWarnAfter:
// most often a --peers list that differs between replicas (a raft address nobody listens at),
// or too few replicas up for a majority.
const MsgNoLeader = "no raft leader"

// watchNoLeader logs MsgNoLeader, with this replica's raft state, term and the configuration it
// votes in, each time after (noLeaderWarnAfter when the node started) passes without a known
// leader. A replica cut off by a wrong peer list otherwise stayed a silent candidate while the
// others ran without it.
func (n *Node) watchNoLeader(ctx context.Context, after time.Duration) {
	since := time.Now()
	tick := time.NewTicker(after / 10)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r := n.Replica.Raft()
		if addr, _ := r.LeaderWithID(); addr != "" {
			since = time.Now()
			continue
		}
		if time.Since(since) < after {
			continue
		}
		var voters []string
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				voters = append(voters, string(s.ID)+"="+string(s.Address))
			}
		}
		hint := "every replica needs the same --peers, each raft address reachable, and a majority up"
		if len(voters) == 0 {
			hint = MsgNoConfigHint
		}
		n.cfg.Logger.Warn(MsgNoLeader, "for", time.Since(since).Round(time.Second).String(),
			"role", strings.ToLower(r.State().String()), "term", r.CurrentTerm(), "voters", strings.Join(voters, ","),
			"hint", hint)
		since = time.Now()
	}
}

// Mux is the HTTP mux (/healthz, /readyz, /api/status); other packages add their routes to it.
func (n *Node) Mux() *http.ServeMux { return n.mux }

// Done is closed when the node has shut down.
func (n *Node) Done() <-chan struct{} { return n.done }

// Fatal receives, at most once, the error that ends this node's service while it runs: a
// *RunConflictError when the cluster turns out to run another config than NodeConfig.Run, a
// *ReleaseMismatchError when the leader runs another state machine rules version (the replica
// has then shut its raft member down already), an error matching ErrStoreWrite when raft could
// not store its term or vote, one matching ErrGRPCStopped when the gRPC server stopped serving.
// The node keeps serving its other listeners until Close; its owner should close it and stop.
func (n *Node) Fatal() <-chan error { return n.fatal }

// submitLoop submits cfg.Run through this node's own gRPC service (which forwards to the
// leader) until it is accepted or definitely refused. It first waits until this replica knows a
// leader and has applied what it knows committed, so that a run already in force with another
// config is refused without a submission reaching the log; the state machine's refusal
// (fsm.ErrConfigMismatch) covers a run this replica had not yet learnt.
func (n *Node) submitLoop(ctx context.Context) {
	if n.cfg.Run == nil {
		return
	}
	if !n.awaitCaughtUp(ctx) {
		return
	}
	if err := n.conflict(); err != nil {
		n.fail(err)
		return
	}
	c, err := Dial([]string{n.cfg.GRPCAddr}, n.cfg.Security)
	if err != nil {
		n.cfg.Logger.Error("submit run config", "err", err)
		return
	}
	defer c.Close()
	hash, err := c.SubmitRun(ctx, *n.cfg.Run)
	switch {
	case err == nil:
		n.cfg.Logger.Info("run config in force", "hash", hash)
	case errors.Is(err, fsm.ErrConfigMismatch):
		// The leader holds a run this replica has not applied yet; wait a little for it to
		// arrive so the refusal can name it.
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for n.conflict() == nil && wait.Err() == nil {
			select {
			case <-n.Replica.Changed():
			case <-wait.Done():
			}
		}
		if e := n.conflict(); e != nil {
			n.fail(e)
			return
		}
		n.fail(&RunConflictError{Where: "the cluster", Given: n.cfg.RunSource, GivenHash: n.given, GivenRun: wireRun(*n.cfg.Run)})
	case ctx.Err() == nil:
		n.cfg.Logger.Error("run config refused", "err", err)
	}
}

// awaitCaughtUp waits until this replica knows a leader and has applied every entry it knows
// to be committed (at least one); false when ctx ends first.
func (n *Node) awaitCaughtUp(ctx context.Context) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r := n.Replica.Raft()
		if addr, _ := r.LeaderWithID(); addr != "" {
			commit, err := strconv.ParseUint(r.Stats()["commit_index"], 10, 64)
			if err == nil && commit > 0 && r.AppliedIndex() >= commit {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// conflict returns the *RunConflictError of a run in this replica's state other than
// cfg.Run; nil when there is none or it is the same.
func (n *Node) conflict() error {
	var err error
	n.Replica.View(func(s *fsm.State) {
		if s.Run != nil && s.ConfigHash != n.given {
			run := *s.Run
			err = &RunConflictError{Where: "the cluster", InForce: &run, InForceHash: s.ConfigHash, Given: n.cfg.RunSource, GivenHash: n.given,
				GivenRun: wireRun(*n.cfg.Run),
				Fresh:    s.NextJoin == 0 && s.Step == 0}
		}
	})
	return err
}

// healthz answers 200 "ok ID ROLE" while raft runs (liveness: a restart would not help a
// replica whose disk is full), with the store's failure appended when raft.db cannot take the
// log entries it receives; 503 once raft has shut down.
func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	st := n.Replica.Raft().State()
	if st == raft.Shutdown {
		http.Error(w, "shut down", http.StatusServiceUnavailable)
		return
	}
	if err := n.store.Failing(); err != nil {
		fmt.Fprintf(w, "ok %s %s; %s: %s: %v\n", n.cfg.ID, strings.ToLower(st.String()), MsgStoreFailing, n.store.path, err)
		return
	}
	fmt.Fprintf(w, "ok %s %s\n", n.cfg.ID, strings.ToLower(st.String()))
}

// readyz answers 200 "ready ID ROLE" while raft runs and its log takes writes; 503 naming the
// failure while raft.db cannot store what the replica receives (its state falls behind: readers
// such as the dashboard's Service should ask another replica), once its gRPC server stopped
// serving (ErrGRPCStopped), or once raft has shut down.
func (n *Node) readyz(w http.ResponseWriter, _ *http.Request) {
	st := n.Replica.Raft().State()
	switch err := n.store.Failing(); {
	case st == raft.Shutdown:
		http.Error(w, "shut down", http.StatusServiceUnavailable)
	case n.grpcDown.Load() != nil:
		http.Error(w, fmt.Sprintf("not ready %s %s: %v", n.cfg.ID, strings.ToLower(st.String()), *n.grpcDown.Load()), http.StatusServiceUnavailable)
	case n.dbGone() != "":
		http.Error(w, fmt.Sprintf("not ready %s %s: %s", n.cfg.ID, strings.ToLower(st.String()), n.dbGone()), http.StatusServiceUnavailable)
	case err != nil:
		http.Error(w, fmt.Sprintf("not ready %s %s: %s: %s: %v", n.cfg.ID, strings.ToLower(st.String()), MsgStoreFailing, n.store.path, err),
			http.StatusServiceUnavailable)
	default:
		fmt.Fprintf(w, "ready %s %s\n", n.cfg.ID, strings.ToLower(st.String()))
	}
}

// StatusJSON is the /api/status document.
type StatusJSON struct {
	Replica      string     `json:"replica"`
	Role         string     `json:"role"`
	Leader       string     `json:"leader"`
	LeaderGRPC   string     `json:"leader_grpc"`
	Term         uint64     `json:"term"`
	AppliedIndex uint64     `json:"applied_index"`
	State        *fsm.State `json:"state"`
}

func (n *Node) apiStatus(w http.ResponseWriter, _ *http.Request) {
	l := n.Replica.Leader()
	doc := StatusJSON{Replica: n.cfg.ID, Role: strings.ToLower(n.Replica.Raft().State().String()), Leader: l.ID,
		LeaderGRPC: l.GRPCAddr, Term: n.Replica.Raft().CurrentTerm(), AppliedIndex: n.Replica.AppliedIndex()}
	n.Replica.View(func(s *fsm.State) { doc.State = s.Clone() })
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}

// Close stops the listeners and raft and closes the stores.
func (n *Node) Close() error {
	select {
	case <-n.done:
		return nil
	default:
	}
	err := n.closeAll()
	close(n.done)
	return err
}

func (n *Node) closeAll() error {
	var errs []error
	if n.cancel != nil {
		n.cancel()
	}
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		errs = append(errs, n.httpSrv.Shutdown(ctx))
		cancel()
	}
	if n.grpcSrv != nil {
		n.grpcSrv.Stop()
	}
	if n.server != nil {
		errs = append(errs, n.server.Close())
	}
	if n.store != nil {
		n.store.Release() // a raft goroutine held by a failed term write ends, so raft can shut down
	}
	if n.Replica != nil {
		errs = append(errs, n.Replica.Shutdown())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	var out []error
	for _, e := range errs {
		if e != nil && !errors.Is(e, http.ErrServerClosed) {
			out = append(out, e)
		}
	}
	return errors.Join(out...)
}
