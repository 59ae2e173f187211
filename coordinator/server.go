package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
)

// errDomain tags the ErrorInfo detail that carries a state-machine error code to the client.
const errDomain = "ddpm.coordinator"

// forwardedKey marks a call one replica forwarded to the leader; it is never forwarded again.
const forwardedKey = "ddpm-forwarded"

// unknownGrace is how long WatchAssignment waits for a member this replica has not seen yet
// (its Join may still be on the way through the log) before answering NotFound.
const unknownGrace = 3 * time.Second

// Server is the Coordinator gRPC service on one replica. Reads (Status, WatchAssignment) are
// answered from the local state; writes go through raft on the leader, forwarded there when
// this replica is a follower.
type Server struct {
	api.UnimplementedCoordinatorServer
	rep     *Replica
	version string
	sec     *tlsauth.Bundle

	storeFailing func() error // a Node's raft.db failing writes (nil: no guarded store)

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// StoreFailingHeader is the gRPC response header in which Status names the failure of a
// replica whose raft log or snapshots cannot store what it receives (MsgStoreFailing's cause);
// absent while its writes succeed. Client.StatusStore reads it.
const StoreFailingHeader = "ddpm-store-failing"

// NewServer returns the service for rep. version is this binary's version; joining trainers
// must run the same one. sec secures the connections that forward writes to the leader (nil
// panics; plain text only with an Insecure Bundle).
func NewServer(rep *Replica, version string, sec *tlsauth.Bundle) *Server {
	if sec == nil {
		panic("coordinator: NewServer without a tlsauth.Bundle")
	}
	return &Server{rep: rep, version: version, sec: sec, conns: map[string]*grpc.ClientConn{}}
}

// Close closes the connections used for forwarding.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	s.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

// leaderClient returns a client for the leader when this replica is not it, nil when it is.
func (s *Server) leaderClient(ctx context.Context) (api.CoordinatorClient, error) {
	if s.rep.IsLeader() {
		return nil, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, status.Errorf(codes.Unavailable, "%v: replica %s received a forwarded write", ErrNotLeader, s.rep.ID())
	}
	l := s.rep.Leader()
	if l.ID != "" && l.GRPCAddr == "" {
		// raft follows a leader this replica's static peer list leaves out (a replica whose
		// data dir was emptied and that bootstrapped with a shorter --peers), so no write
		// can be forwarded to it. Its raft data keeps that bootstrap's configuration (the
		// cluster's first entry has the same index and term, so raft never replaces it), which
		// the start-up check would refuse: the data dir is to be moved aside.
		return nil, status.Errorf(codes.Unavailable, "%v: the leader %s is not in replica %s's --peers (%s): stop %s, move its --data-dir aside and start it with the --peers of the other replicas",
			ErrNotLeader, l.ID, s.rep.ID(), strings.Join(s.rep.peerIDs(), ","), s.rep.ID())
	}
	if l.GRPCAddr == "" {
		return nil, status.Errorf(codes.Unavailable, "%v: no leader known to replica %s (raft elects one while a majority of the %d replicas in --peers are up and reach each other)",
			ErrNotLeader, s.rep.ID(), len(s.rep.peerIDs()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cc, ok := s.conns[l.GRPCAddr]
	if !ok {
		var err error
		opts := append(callOptions(), s.sec.DialOptions()...)
		opts = append(opts, grpc.WithUnaryInterceptor(s.forwardErrors(l)))
		cc, err = grpc.NewClient(l.GRPCAddr, opts...)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "dial leader %s: %v", l.GRPCAddr, err)
		}
		s.conns[l.GRPCAddr] = cc
	}
	return api.NewCoordinatorClient(cc), nil
}

// MsgCannotForward is the warning of a replica that cannot reach the leader it forwards writes
// to, logged with the leader's id and gRPC address (leader, leader_grpc) and the error.
const MsgCannotForward = "cannot forward to the leader at leader_grpc: it is down (a new leader takes over within seconds) or, if this lasts, that address in this replica's peers is wrong"

// forwardErrors names the forwarding hop in the errors of calls that could not reach the leader
// (a wrong gRPC address for it in this replica's --peers looked, to a trainer, like this
// replica being down), and logs the first of each run of them on this replica.
func (s *Server) forwardErrors(l Peer) grpc.UnaryClientInterceptor {
	var lastWarn time.Time
	var mu sync.Mutex
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		st, ok := status.FromError(err)
		// Only failures of the link itself: the leader's own answers pass unchanged.
		if err == nil || !ok || st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), "connection error") {
			return err
		}
		msg := fmt.Sprintf("replica %s cannot reach the leader %s at %s (its gRPC address in %s's --peers): %s",
			s.rep.ID(), l.ID, l.GRPCAddr, s.rep.ID(), st.Message())
		mu.Lock()
		if time.Since(lastWarn) > 10*time.Second {
			lastWarn = time.Now()
			// Most often the leader has just gone down and a new one is elected within
			// seconds; the peers (--peers, which ddpm local passes) are to blame only when it
			// lasts.
			s.rep.log.Warn(MsgCannotForward, "leader", l.ID, "leader_grpc", l.GRPCAddr, "err", st.Message())
		}
		mu.Unlock()
		return status.Error(st.Code(), msg)
	}
}

func forwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

// propose commits c and turns a state-machine refusal into a gRPC status carrying its code.
func (s *Server) propose(ctx context.Context, c fsm.Command) (fsm.Result, error) {
	res, err := s.rep.Propose(ctx, c)
	if err != nil {
		return res, status.Error(codes.Unavailable, err.Error())
	}
	if res.Code != "" {
		return res, resultStatus(res)
	}
	return res, nil
}

// grpcCodes maps state-machine error codes to gRPC codes.
var grpcCodes = map[string]codes.Code{
	"no_run":            codes.FailedPrecondition,
	"invalid_config":    codes.InvalidArgument,
	"config_mismatch":   codes.FailedPrecondition,
	"unknown_member":    codes.NotFound,
	"stale_generation":  codes.Aborted,
	"not_in_ring":       codes.FailedPrecondition,
	"bad_checkpoint":    codes.InvalidArgument,
	"run_finished":      codes.FailedPrecondition,
	"bad_command":       codes.InvalidArgument,
	"version_mismatch":  codes.FailedPrecondition,
	"id_in_use":         codes.AlreadyExists,
	"stale_incarnation": codes.FailedPrecondition,
	"bad_rollback":      codes.FailedPrecondition,
}

func resultStatus(res fsm.Result) error {
	code, ok := grpcCodes[res.Code]
	if !ok {
		code = codes.Unknown
	}
	st := status.New(code, res.Err().Error())
	md := map[string]string{"message": res.Message}
	if res.Code == "stale_incarnation" {
		md["incarnation"], md["address"], md["process"] = strconv.FormatUint(res.Incarnation, 10), res.Address, res.Nonce
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: res.Code, Domain: errDomain, Metadata: md}); err == nil {
		st = d
	}
	return st.Err()
}

// SubmitRun implements api.CoordinatorServer.
func (s *Server) SubmitRun(ctx context.Context, req *api.SubmitRunRequest) (*api.SubmitRunResponse, error) {
	if err := validateSubmit(req); err != nil {
		return nil, err
	}
	run, err := config.Parse(req.RunYaml)
	if err != nil {
		return nil, resultStatus(fsm.Result{Code: "invalid_config", Message: err.Error()})
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.SubmitRun(forwarded(ctx), req)
	}
	if _, err := s.propose(ctx, fsm.Command{Kind: fsm.KindSubmit, RequestID: req.RequestId, Submit: &fsm.Submit{Run: run}}); err != nil {
		return nil, err
	}
	return &api.SubmitRunResponse{ConfigHash: run.Hash()}, nil
}

// Join implements api.CoordinatorServer.
func (s *Server) Join(ctx context.Context, req *api.JoinRequest) (*api.JoinResponse, error) {
	if err := checkToken("version", req.Version, MaxVersionLen, false); err != nil {
		return nil, err
	}
	if req.Version != s.version {
		return nil, resultStatus(fsm.Result{Code: "version_mismatch",
			Message: fmt.Sprintf("trainer %q runs binary version %q, the coordinator runs %q", req.Id, req.Version, s.version)})
	}
	if err := validateJoin(req); err != nil {
		return nil, err
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.Join(forwarded(ctx), req)
	}
	// A trainer of another run config is refused as the state machine would refuse it (a run,
	// once set, never changes, so the leader's view decides), with the cluster's run named and
	// what to do: the state machine's line gave only both hashes.
	var mismatch string
	s.rep.View(func(st *fsm.State) {
		if st.Run != nil && req.ConfigHash != "" && req.ConfigHash != st.ConfigHash {
			mismatch = fmt.Sprintf("trainer %q runs config %.12s but the cluster runs %.12s (preset %s, model %s, dataset %s, "+
				"%d steps, seed %d): leave out --config and the run flags to take the cluster's run config, or make them match it",
				req.Id, req.ConfigHash, st.ConfigHash, orDash(st.Run.Preset), st.Run.Model, st.Run.Dataset, st.Run.Steps, st.Run.Seed)
		}
	})
	if mismatch != "" {
		return nil, resultStatus(fsm.Result{Code: "config_mismatch", Message: mismatch})
	}
	j := &fsm.Join{ID: req.Id, Address: req.Address, Version: req.Version, ConfigHash: req.ConfigHash, Nonce: req.ProcessNonce}
	for _, h := range req.Held {
		j.Held = append(j.Held, fsm.Held{Step: h.Step, SHA256: h.Sha256})
	}
	res, err := s.propose(ctx, fsm.Command{Kind: fsm.KindJoin, RequestID: req.RequestId, Join: j})
	if err != nil {
		return nil, err
	}
	resp := &api.JoinResponse{Generation: res.Generation, Incarnation: res.Incarnation, Replicas: s.rep.ReplicaAddrs()}
	s.rep.View(func(st *fsm.State) {
		resp.ConfigHash = st.ConfigHash
		if st.Run != nil {
			resp.RunYaml = st.Run.Marshal()
		}
		resp.Abandoned = abandonedList(st)
	})
	return resp, nil
}

// Heartbeat implements api.CoordinatorServer.
func (s *Server) Heartbeat(ctx context.Context, req *api.HeartbeatRequest) (*api.HeartbeatResponse, error) {
	if err := validateHeartbeat(req); err != nil {
		return nil, err
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.Heartbeat(forwarded(ctx), req)
	}
	res, err := s.propose(ctx, fsm.Command{Kind: fsm.KindHeartbeat, RequestID: req.RequestId, Heartbeat: &fsm.Heartbeat{ID: req.Id, Incarnation: req.Incarnation}})
	if err != nil {
		return nil, err
	}
	return &api.HeartbeatResponse{Generation: res.Generation, Replicas: s.rep.ReplicaAddrs()}, nil
}

// Leave implements api.CoordinatorServer: the trainer is removed at once (fsm.KindLeave), which
// ends the generation it had a rank in; a stale incarnation is refused and removes nothing.
func (s *Server) Leave(ctx context.Context, req *api.LeaveRequest) (*api.LeaveResponse, error) {
	if err := validateLeave(req); err != nil {
		return nil, err
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.Leave(forwarded(ctx), req)
	}
	res, err := s.propose(ctx, fsm.Command{Kind: fsm.KindLeave, RequestID: req.RequestId, Leave: &fsm.Leave{ID: req.Id, Incarnation: req.Incarnation}})
	if err != nil {
		return nil, err
	}
	return &api.LeaveResponse{Generation: res.Generation}, nil
}

// ReportProgress implements api.CoordinatorServer.
func (s *Server) ReportProgress(ctx context.Context, req *api.ReportProgressRequest) (*api.ReportProgressResponse, error) {
	if err := validateProgress(req); err != nil {
		return nil, err
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.ReportProgress(forwarded(ctx), req)
	}
	p := fsm.LossPoint{Loss: req.Loss, GradNorm: req.GradNorm, LR: req.Lr, ImagesPerSec: req.ImagesPerSec,
		ComputeSec: req.ComputeSec, AllReduceSec: req.AllreduceSec, WaitSec: req.WaitSec, BusBW: req.Busbw}
	if req.Skipped {
		// A skipped step's loss, quartiles and gradient norm are not recorded (and may be
		// non-finite, which the log's JSON cannot carry). Its images/s is recorded as 0 whatever
		// the report says (ddpm's trainers report 0: no image was trained), so the trained-only
		// throughput of a merged point is derivable (fsm.LossPoint.TrainedImagesPerSec).
		p = fsm.LossPoint{Skipped: 1, LR: req.Lr,
			ComputeSec: req.ComputeSec, AllReduceSec: req.AllreduceSec, WaitSec: req.WaitSec, BusBW: req.Busbw}
	}
	// A quartile is absent when the report has none, or marks it with a negative value (no
	// sample this step); L_simple itself is never negative.
	for q := range p.LossQuartiles {
		if !req.Skipped && q < len(req.LossQuartiles) && req.LossQuartiles[q] >= 0 {
			p.LossQuartiles[q] = req.LossQuartiles[q]
		} else {
			p.QuartilesMissing[q] = 1
		}
	}
	res, err := s.propose(ctx, fsm.Command{Kind: fsm.KindProgress, RequestID: req.RequestId, Progress: &fsm.Progress{
		ID: req.Id, Incarnation: req.Incarnation, Generation: req.Generation, Step: req.Step, Point: p, Failure: req.Failure}})
	if err != nil {
		return nil, err
	}
	return &api.ReportProgressResponse{Generation: res.Generation}, nil
}

// CheckpointReady implements api.CoordinatorServer.
func (s *Server) CheckpointReady(ctx context.Context, req *api.CheckpointReadyRequest) (*api.CheckpointReadyResponse, error) {
	if err := validateCheckpoint(req); err != nil {
		return nil, err
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.CheckpointReady(forwarded(ctx), req)
	}
	res, err := s.propose(ctx, fsm.Command{Kind: fsm.KindCheckpoint, RequestID: req.RequestId, Checkpoint: &fsm.CheckpointReport{
		ID: req.Id, Incarnation: req.Incarnation, Generation: req.Generation, Step: req.Step, SHA256: req.Sha256, Size: req.Size}})
	if err != nil {
		return nil, err
	}
	return &api.CheckpointReadyResponse{Generation: res.Generation}, nil
}

// RollbackRun implements api.CoordinatorServer: an operator's fsm.Rollback through raft. The
// state machine checks the step (fsm.State.PlanRollback); a refusal comes back with its code.
func (s *Server) RollbackRun(ctx context.Context, req *api.RollbackRunRequest) (*api.RollbackRunResponse, error) {
	if err := checkToken("request_id", req.RequestId, MaxIDLen, true); err != nil {
		return nil, err
	}
	if req.ToStep < 0 {
		return nil, badRequest("to_step %d is negative", req.ToStep)
	}
	if lc, err := s.leaderClient(ctx); err != nil || lc != nil {
		if err != nil {
			return nil, err
		}
		return lc.RollbackRun(forwarded(ctx), req)
	}
	res, err := s.propose(ctx, fsm.Command{Kind: fsm.KindRollback, RequestID: req.RequestId, Rollback: &fsm.Rollback{ToStep: req.ToStep}})
	if err != nil {
		return nil, err
	}
	s.rep.log.Warn("run rolled back by an operator", "to_step", req.ToStep, "generation", res.Generation)
	return &api.RollbackRunResponse{Generation: res.Generation}, nil
}

// Status implements api.CoordinatorServer from this replica's local state.
func (s *Server) Status(ctx context.Context, _ *api.StatusRequest) (*api.StatusResponse, error) {
	l := s.rep.Leader()
	resp := &api.StatusResponse{ReplicaId: s.rep.ID(), LeaderId: l.ID, LeaderGrpcAddress: l.GRPCAddr,
		RaftTerm: s.rep.raft.CurrentTerm(), AppliedIndex: s.rep.AppliedIndex(), Replicas: s.rep.ReplicaAddrs()}
	if f := s.rep.raft.GetConfiguration(); f.Error() == nil {
		resp.RaftServers = raftServers(f.Configuration()) // what a new replica compares its --peers with
	}
	if s.storeFailing != nil {
		if err := s.storeFailing(); err != nil {
			grpc.SetHeader(ctx, metadata.Pairs(StoreFailingHeader, err.Error()))
		}
	}
	s.rep.View(func(st *fsm.State) {
		resp.StateJson = st.Encode()
		resp.RunStatus, resp.Reason, resp.Step, resp.TotalSteps = string(st.Status), st.Reason, st.Step, st.TotalSteps
		resp.Generation, resp.World = st.Generation.Number, int32(st.Generation.World)
	})
	return resp, nil
}

// WatchAssignment implements api.CoordinatorServer: it sends the member's assignment at once and
// again whenever it changes, until the client goes away. A member unknown for longer than a
// short grace (removed, or never joined) ends the stream with NotFound; a non-zero
// req.Incarnation older than the id's current one ends it at once with the stale_incarnation
// refusal (FailedPrecondition), as the writes are refused; a newer one (a Join this replica has
// not applied yet) is waited for like an id not seen yet.
func (s *Server) WatchAssignment(req *api.WatchAssignmentRequest, stream grpc.ServerStreamingServer[api.Assignment]) error {
	if err := checkToken("id", req.Id, MaxIDLen, false); err != nil {
		return err
	}
	ctx := stream.Context()
	var last *api.Assignment
	var unknownSince time.Time
	for {
		changed := s.rep.Changed()
		var a *api.Assignment
		known := false
		var stale *fsm.Result
		s.rep.View(func(st *fsm.State) {
			a, known = AssignmentFor(st, req.Id)
			if !known {
				return
			}
			m := st.Members[req.Id]
			if req.Incarnation > m.Incarnation {
				// Incarnations only grow: this replica has not applied the Join that admitted
				// req.Incarnation yet (a follower behind the leader), so wait for it as for
				// an id not seen yet.
				a, known = nil, false
			} else if r := m.CheckIncarnation(req.Incarnation); r.Code != "" {
				stale = &r
			}
		})
		if stale != nil {
			return resultStatus(*stale)
		}
		if !known {
			if unknownSince.IsZero() {
				unknownSince = time.Now()
			}
			if time.Since(unknownSince) > unknownGrace {
				return resultStatus(fsm.Result{Code: "unknown_member", Message: fmt.Sprintf("%q is not a member; join again", req.Id)})
			}
		} else {
			unknownSince = time.Time{}
			if last == nil || !proto.Equal(a, last) {
				if err := stream.Send(a); err != nil {
					return err
				}
				last = a
			}
		}
		timer := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// abandonedList is s.StillAbandoned() on the wire (JoinResponse and Assignment "abandoned").
func abandonedList(s *fsm.State) []*api.CoordHeldCheckpoint {
	var out []*api.CoordHeldCheckpoint
	for _, h := range s.StillAbandoned() {
		out = append(out, &api.CoordHeldCheckpoint{Step: h.Step, Sha256: h.SHA256})
	}
	return out
}

// AssignmentFor computes member id's assignment from state s; known is false when id is not a
// member. Ring peers and checkpoint holders carry the members' current addresses; Abandoned
// lists the checkpoints rollbacks abandoned (fsm.State.StillAbandoned), for standbys too.
func AssignmentFor(s *fsm.State, id string) (a *api.Assignment, known bool) {
	if _, ok := s.Members[id]; !ok {
		return nil, false
	}
	g := s.Generation
	a = &api.Assignment{Generation: g.Number, Rank: int32(g.Rank(id)), World: int32(g.World), StartStep: g.StartStep,
		RunStatus: string(s.Status), Reason: s.Reason, ConfigHash: s.ConfigHash, TotalSteps: s.TotalSteps,
		Abandoned: abandonedList(s)}
	for _, rid := range g.Ring {
		a.Ring = append(a.Ring, &api.CoordPeer{Id: rid, Address: s.Members[rid].Address})
	}
	if c := g.Checkpoint; c != nil {
		cp := &api.CoordCheckpoint{Step: c.Step, Sha256: c.SHA256, Size: c.Size, Generation: c.Generation, Time: c.Time}
		holders := c.Holders
		if latest := s.LatestCheckpoint(); latest != nil && latest.Step == c.Step {
			holders = latest.Holders
		}
		for _, h := range holders {
			if m, ok := s.Members[h]; ok {
				cp.Holders = append(cp.Holders, &api.CoordPeer{Id: h, Address: m.Address})
			}
		}
		a.Checkpoint = cp
	}
	return a, true
}
