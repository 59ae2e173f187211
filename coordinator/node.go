package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
	// Run, when set, is submitted once a leader is elected (a no-op if already in force).
	Run *config.Run
	// Version is this binary's version; joining trainers must match it.
	Version string
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

// Node is a running coordinator process: replica, gRPC and HTTP servers.
type Node struct {
	cfg     NodeConfig
	Replica *Replica
	server  *Server
	grpcSrv *grpc.Server
	httpSrv *http.Server
	mux     *http.ServeMux
	store   *raftboltdb.BoltStore
	trans   *raft.NetworkTransport
	cancel  context.CancelFunc
	done    chan struct{}
}

// StartNode opens the stores in DataDir, starts raft and the listeners, and (when cfg.Run is
// set) submits the run config in the background. Errors name what failed.
func StartNode(cfg NodeConfig) (_ *Node, err error) {
	if cfg.Security == nil {
		panic("coordinator: NodeConfig.Security is nil (tlsauth.Load it; plain text only with Config.Insecure)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("coordinator: data dir: %w", err)
	}
	n := &Node{cfg: cfg, done: make(chan struct{})}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	n.store, err = raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bolt.Options{Timeout: raftDBLockTimeout}})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		by := "another process"
		if pid := flockholder.PID(dbPath); pid > 0 {
			by = "process " + strconv.Itoa(pid)
		}
		return nil, fmt.Errorf("coordinator: %s is in use by %s (another coordinator on --data-dir %s?)", dbPath, by, cfg.DataDir)
	case err != nil:
		return nil, fmt.Errorf("coordinator: open %s: %w", dbPath, err)
	}
	raftLog := cfg.RaftLog
	if raftLog == nil {
		raftLog = io.Discard
	}
	snaps, err := raft.NewFileSnapshotStore(cfg.DataDir, 2, raftLog)
	if err != nil {
		return nil, fmt.Errorf("coordinator: snapshots: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft address %q: %w", cfg.RaftAddr, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("coordinator: raft address %q: must name an IP other peers can reach", cfg.RaftAddr)
	}
	rln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: raft transport on %s: %w", cfg.RaftAddr, err)
	}
	n.trans = raft.NewNetworkTransport(cfg.Security.RaftStreamLayer(rln, adv), 3, 2*time.Second, raftLog)
	n.Replica, err = NewReplica(ReplicaConfig{ID: cfg.ID, Peers: cfg.Peers, Bootstrap: cfg.Bootstrap, Raft: cfg.Raft,
		LogStore: n.store, StableStore: n.store, Snapshots: snaps, Transport: n.trans, Logger: cfg.Logger, RaftLog: cfg.RaftLog})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: gRPC listen on %s: %w", cfg.GRPCAddr, err)
	}
	n.server = NewServer(n.Replica, cfg.Version, cfg.Security)
	n.grpcSrv = grpc.NewServer(append(cfg.Security.ServerOptions(), ServerOptions()...)...)
	api.RegisterCoordinatorServer(n.grpcSrv, n.server)
	go n.grpcSrv.Serve(lis)
	n.mux = http.NewServeMux()
	n.mux.HandleFunc("GET /healthz", n.healthz)
	n.mux.HandleFunc("GET /api/status", n.apiStatus)
	web.Mount(n.mux, n.Replica, web.Options{}) // dashboard /, /api/summary, /api/loss, /metrics
	if cfg.HTTPAddr != "" {
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("coordinator: HTTP listen on %s: %w", cfg.HTTPAddr, err)
		}
		n.httpSrv = &http.Server{Handler: n.mux, ReadHeaderTimeout: 5 * time.Second}
		go n.httpSrv.Serve(hl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go n.submitLoop(ctx)
	go n.watchNoLeader(ctx, noLeaderWarnAfter)
	return n, nil
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
		n.cfg.Logger.Warn(MsgNoLeader, "for", time.Since(since).Round(time.Second).String(),
			"role", strings.ToLower(r.State().String()), "term", r.CurrentTerm(), "voters", strings.Join(voters, ","),
			"hint", "every replica needs the same --peers, each raft address reachable, and a majority up")
		since = time.Now()
	}
}

// Mux is the HTTP mux (/healthz, /api/status); other packages add their routes to it.
func (n *Node) Mux() *http.ServeMux { return n.mux }

// Done is closed when the node has shut down.
func (n *Node) Done() <-chan struct{} { return n.done }

// submitLoop submits cfg.Run through this node's own gRPC service (which forwards to the
// leader) until it is accepted or definitely refused.
func (n *Node) submitLoop(ctx context.Context) {
	if n.cfg.Run == nil {
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
	case ctx.Err() == nil:
		n.cfg.Logger.Error("run config refused", "err", err)
	}
}

func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	st := n.Replica.Raft().State()
	if st == raft.Shutdown {
		http.Error(w, "shut down", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ok %s %s\n", n.cfg.ID, strings.ToLower(st.String()))
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
