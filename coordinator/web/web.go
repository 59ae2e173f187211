// Package web is the coordinator's monitoring surface over HTTP: the live dashboard page (its
// HTML, script and the vendored uPlot chart library embedded in the binary, since clusters are
// often offline), JSON documents for the page and for tools, and the Prometheus /metrics.
//
// Everything is read from the replicated state (coordinator/fsm.State) of the replica that
// serves the request, so every replica answers the same and the curves survive a leader change.
//
// Routes (all GET):
//
//	/                 the dashboard; it polls /api/summary and /api/loss about once a second
//	/assets/...       the page's embedded script, style sheet and uPlot
//	/api/status       the whole replicated state with this replica's raft facts (StatusDoc)
//	/api/summary      the state without the loss history and the dedup table (Summary)
//	/api/loss         the loss history, ?from=STEP&to=STEP inclusive, both optional (LossDoc)
//	/metrics          Prometheus text exposition (internal/metrics, ddpm_coordinator_*)
//
// The routes carry no authentication of their own: `ddpm coordinator --http-tls` serves them
// over HTTPS behind tlsauth.Bundle.GuardHTTP (a client certificate of the cluster's CA, role
// operator, coordinator or none); without it they are plain HTTP to whoever reaches the port.
package web

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"ddpm/coordinator/fsm"
	"ddpm/internal/metrics"
)

// Errors of this package.
var (
	// ErrBadQuery: a query parameter of /api/loss is not an integer step, or from > to.
	ErrBadQuery = errors.New("web: bad query")
)

//go:embed assets
var assets embed.FS

// Source is the replicated state the handlers read. *coordinator.Replica satisfies it.
type Source interface {
	// View calls fn with the current state under a read lock; fn must not keep it.
	View(fn func(s *fsm.State))
}

// raftSource is what a Source may also offer to describe the serving replica;
// *coordinator.Replica has these methods.
type raftSource interface {
	ID() string
	Raft() *raft.Raft
	AppliedIndex() uint64
}

// ReplicaInfo describes the replica that answers a request.
type ReplicaInfo struct {
	Replica      string `json:"replica"`
	Role         string `json:"role"` // leader, follower, candidate, shutdown
	Leader       string `json:"leader"`
	LeaderGRPC   string `json:"leader_grpc,omitempty"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
}

// Options configures New and Mount. The zero value is ready to use.
type Options struct {
	// Info describes the serving replica. Nil: derived from the Source when it offers ID, Raft
	// and AppliedIndex (as *coordinator.Replica does), else left empty.
	Info func() ReplicaInfo
	// Registry receives the coordinator's metrics and is served on /metrics. Nil: a new
	// registry from metrics.NewRegistry.
	Registry *prometheus.Registry
}

// handler serves the routes on one Source.
type handler struct {
	src  Source
	info func() ReplicaInfo
	reg  *prometheus.Registry
}

func newHandler(src Source, opts Options) *handler {
	if src == nil {
		panic("web: nil Source")
	}
	h := &handler{src: src, info: opts.Info, reg: opts.Registry}
	if h.info == nil {
		h.info = func() ReplicaInfo { return ReplicaInfo{} }
		if rs, ok := src.(raftSource); ok {
			h.info = func() ReplicaInfo { return raftInfo(rs) }
		}
	}
	if h.reg == nil {
		h.reg = metrics.NewRegistry()
	}
	metrics.NewCoordinator(h.reg, h.snapshot)
	return h
}

func raftInfo(rs raftSource) ReplicaInfo {
	r := rs.Raft()
	_, leader := r.LeaderWithID()
	return ReplicaInfo{Replica: rs.ID(), Role: strings.ToLower(r.State().String()), Leader: string(leader),
		Term: r.CurrentTerm(), AppliedIndex: rs.AppliedIndex()}
}

// routes lists every route of the package with its pattern.
func (h *handler) routes() []struct {
	pattern string
	fn      http.Handler
} {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic("web: embedded assets: " + err.Error())
	}
	return []struct {
		pattern string
		fn      http.Handler
	}{
		{"GET /{$}", http.HandlerFunc(h.index)},
		{"GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static))},
		{"GET /api/status", http.HandlerFunc(h.status)},
		{"GET /api/summary", http.HandlerFunc(h.summary)},
		{"GET /api/loss", http.HandlerFunc(h.loss)},
		{"GET /metrics", metrics.Handler(h.reg)},
	}
}

// New returns a handler serving every route of the package on src.
func New(src Source, opts Options) http.Handler {
	h := newHandler(src, opts)
	mux := http.NewServeMux()
	for _, r := range h.routes() {
		mux.Handle(r.pattern, r.fn)
	}
	return mux
}

// Mount adds the package's routes to mux, leaving any route mux already serves as it is (the
// coordinator node's own /api/status, which has the same document). It registers the
// coordinator's metrics with opts.Registry (or a new registry), so call it once per registry.
func Mount(mux *http.ServeMux, src Source, opts Options) {
	h := newHandler(src, opts)
	for _, r := range h.routes() {
		method, path, _ := strings.Cut(r.pattern, " ")
		path = strings.TrimSuffix(path, "{$}")
		if _, pattern := mux.Handler(&http.Request{Method: method, URL: &url.URL{Path: path}}); pattern != "" {
			continue
		}
		mux.Handle(r.pattern, r.fn)
	}
}

func (h *handler) index(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		panic("web: embedded index.html: " + err.Error())
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// StatusDoc is the /api/status document: the serving replica's raft facts and the whole
// replicated state. Its fields match the coordinator node's own /api/status.
type StatusDoc struct {
	ReplicaInfo
	State *fsm.State `json:"state"`
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	doc := StatusDoc{ReplicaInfo: h.info()}
	h.src.View(func(s *fsm.State) { doc.State = s.Clone() })
	writeJSON(w, doc)
}

// Summary is the /api/summary document the dashboard polls: the state without the loss history
// and the request-dedup table. Members are in join order; times are Unix ns.
type Summary struct {
	Replica     ReplicaInfo      `json:"replica"`
	Status      fsm.Status       `json:"status"`
	Reason      string           `json:"reason,omitempty"`
	Preset      string           `json:"preset,omitempty"`
	Model       string           `json:"model,omitempty"`
	GlobalBatch int              `json:"global_batch,omitempty"`
	ConfigHash  string           `json:"config_hash,omitempty"`
	Step        int64            `json:"step"`
	TotalSteps  int64            `json:"total_steps"`
	Generation  fsm.Generation   `json:"generation"`
	Members     []fsm.Member     `json:"members"`
	Checkpoints []fsm.Checkpoint `json:"checkpoints"`
	// Abandoned are the committed checkpoints rollbacks gave up, in the order abandoned (as
	// fsm.State.Abandoned); empty when no rollback happened.
	Abandoned []fsm.AbandonedCheckpoint `json:"abandoned"`
	// Waiting says why no generation runs, when it is for trainers (fsm.State.TrainerWait:
	// "for 2 trainers (min_trainers), 1 joined: t0") or for a holder of the newest committed
	// checkpoint ("for a holder of checkpoint N (IDS) to rejoin"); empty otherwise.
	Waiting    string      `json:"waiting,omitempty"`
	Events     []fsm.Event `json:"events"`
	LossPoints int         `json:"loss_points"`
	// ImagesPerSec is the cluster's throughput at the newest loss-history point, images/s over
	// its trained steps (fsm.LossPoint.TrainedImagesPerSec); null when there is no point or the
	// newest has only skipped steps.
	ImagesPerSec *float64 `json:"images_per_sec"`
	Applied      uint64   `json:"applied"`
}

// SummaryOf extracts the Summary of s (without the replica facts).
func SummaryOf(s *fsm.State) Summary {
	sum := Summary{Status: s.Status, Reason: s.Reason, ConfigHash: s.ConfigHash, Step: s.Step, TotalSteps: s.TotalSteps,
		Generation: s.Generation, Checkpoints: slices.Clone(s.Checkpoints), Events: slices.Clone(s.Events),
		LossPoints: len(s.Loss.Points), Applied: s.Applied, Members: make([]fsm.Member, 0, len(s.Members))}
	sum.Generation.Ring = slices.Clone(s.Generation.Ring)
	if c := s.Generation.Checkpoint; c != nil {
		cc := *c
		cc.Holders = slices.Clone(c.Holders)
		sum.Generation.Checkpoint = &cc
	}
	if n := len(s.Loss.Points); n > 0 {
		if v := s.Loss.Points[n-1].TrainedImagesPerSec(); !math.IsNaN(v) {
			sum.ImagesPerSec = &v
		}
	}
	if s.Run != nil {
		sum.Preset, sum.Model, sum.GlobalBatch = s.Run.Preset, s.Run.Model, s.Run.GlobalBatch
	}
	sum.Waiting = s.TrainerWait()
	if cp := s.HolderWait(); cp != nil {
		sum.Waiting = fmt.Sprintf("for a holder of checkpoint %d (%s) to rejoin", cp.Step, strings.Join(cp.Holders, " "))
	}
	for _, m := range s.Members {
		sum.Members = append(sum.Members, *m)
	}
	slices.SortFunc(sum.Members, func(a, b fsm.Member) int {
		switch {
		case a.JoinSeq < b.JoinSeq:
			return -1
		case a.JoinSeq > b.JoinSeq:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	for i := range sum.Checkpoints {
		sum.Checkpoints[i].Holders = slices.Clone(sum.Checkpoints[i].Holders)
	}
	if sum.Checkpoints == nil {
		sum.Checkpoints = []fsm.Checkpoint{}
	}
	sum.Abandoned = make([]fsm.AbandonedCheckpoint, 0, len(s.Abandoned))
	for _, a := range s.Abandoned {
		a.Holders = slices.Clone(a.Holders)
		sum.Abandoned = append(sum.Abandoned, a)
	}
	if sum.Events == nil {
		sum.Events = []fsm.Event{}
	}
	return sum
}

func (h *handler) summary(w http.ResponseWriter, _ *http.Request) {
	var sum Summary
	h.src.View(func(s *fsm.State) { sum = SummaryOf(s) })
	sum.Replica = h.info()
	writeJSON(w, sum)
}

// LossDoc is the /api/loss document. Points are those of the bounded history with From <= Step
// <= To, in step order. PointsTotal and ReportsTotal describe the whole history (ReportsTotal
// sums the points' Count) and Generation is the current generation: a client that fetches only
// new points keeps its copy while these agree with what it holds, and refetches everything when
// they do not (the history was compacted, or a new generation rolled it back). Points are as the
// replicated state holds them: a merged point's images_per_sec counts its skipped steps as 0
// (fsm.LossPoint.TrainedImagesPerSec gives the throughput over its trained ones).
type LossDoc struct {
	Generation   uint64          `json:"generation"`
	Capacity     int             `json:"capacity"`
	PointsTotal  int             `json:"points_total"`
	ReportsTotal int64           `json:"reports_total"`
	From         int64           `json:"from"`
	To           int64           `json:"to"`
	Points       []fsm.LossPoint `json:"points"`
}

// LossQuery parses /api/loss's from and to (absent: the whole range). It returns ErrBadQuery
// naming the parameter for a value that is not a non-negative integer, or when from > to.
func LossQuery(q url.Values) (from, to int64, err error) {
	from, to = 0, math.MaxInt64
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &from}, {"to", &to}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, e := strconv.ParseInt(v, 10, 64)
		if e != nil || n < 0 {
			return 0, 0, fmt.Errorf("%w: %s=%q is not a step (a non-negative integer)", ErrBadQuery, p.name, v)
		}
		*p.dst = n
	}
	if from > to {
		return 0, 0, fmt.Errorf("%w: from=%d is after to=%d", ErrBadQuery, from, to)
	}
	return from, to, nil
}

// LossOf extracts the LossDoc of s for steps [from, to].
func LossOf(s *fsm.State, from, to int64) LossDoc {
	doc := LossDoc{Generation: s.Generation.Number, Capacity: s.Loss.Capacity, PointsTotal: len(s.Loss.Points),
		From: from, To: to, Points: []fsm.LossPoint{}}
	for _, p := range s.Loss.Points {
		doc.ReportsTotal += p.Count
		if p.Step >= from && p.Step <= to {
			doc.Points = append(doc.Points, p)
		}
	}
	return doc
}

func (h *handler) loss(w http.ResponseWriter, r *http.Request) {
	from, to, err := LossQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var doc LossDoc
	h.src.View(func(s *fsm.State) { doc = LossOf(s, from, to) })
	writeJSON(w, doc)
}

// snapshot reads the metrics' view of the state.
func (h *handler) snapshot() metrics.ClusterSnapshot {
	info := h.info()
	snap := metrics.ClusterSnapshot{Replica: info.Replica, Leader: info.Role == "leader", Term: info.Term,
		AppliedIndex: info.AppliedIndex, LastCheckpoint: -1}
	h.src.View(func(s *fsm.State) {
		snap.Applied, snap.Status, snap.Step, snap.TotalSteps = s.Applied, string(s.Status), s.Step, s.TotalSteps
		snap.Generation, snap.World = s.Generation.Number, s.Generation.World
		for _, m := range s.Members {
			if m.State == fsm.MemberActive {
				snap.Active++
			} else {
				snap.Waiting++
			}
		}
		snap.Checkpoints = len(s.Checkpoints)
		if c := s.LatestCheckpoint(); c != nil {
			snap.LastCheckpoint = c.Step
		}
		snap.LossHistoryPoints = len(s.Loss.Points)
		if n := len(s.Loss.Points); n > 0 {
			p := s.Loss.Points[n-1]
			snap.HasLast, snap.Loss, snap.LossQuartiles, snap.GradNorm, snap.LR = true, p.Loss, p.LossQuartiles, p.GradNorm, p.LR
			if !p.HasLoss() {
				// Only steps skipped for a non-finite gradient: no loss, no gradient norm (0
				// would read as a perfect loss).
				snap.Loss, snap.GradNorm = math.NaN(), math.NaN()
			}
			for q := range snap.LossQuartiles {
				if !p.HasQuartile(q) {
					snap.LossQuartiles[q] = math.NaN() // not exported
				}
			}
			// Throughput over the point's trained steps (NaN when it has none), as ddpm loss and
			// ddpm status read it.
			snap.ImagesPerSec, snap.BusBW, snap.ComputeSec, snap.AllReduceSec, snap.WaitSec =
				p.TrainedImagesPerSec(), p.BusBW, p.ComputeSec, p.AllReduceSec, p.WaitSec
		}
	})
	return snap
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "web: encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}
