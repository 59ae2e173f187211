// Package trainer is the training loop that ties the system together (DESIGN.md section 3): a
// Trainer owns one replica of the model and its optimizer state and advances it one global step
// at a time, exchanging gradients with the other ranks through one all-reduce per step.
//
// The loop reads like nanoGPT's train.py: Step is the body of the loop, Run (cluster.go) is the
// loop with its distributed rules (join, assignment, checkpoint, re-ring).
//
// Every random choice of a step is keyed by (seed, global sample position), never by rank, world
// size or clock, so the trajectory is the same for 1 or N trainers up to float summation order,
// and a resumed run is bitwise equal to an uninterrupted one.
package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"time"

	"ddpm/config"
	"ddpm/dataset"
	"ddpm/diffusion"
	"ddpm/internal/metrics"
	"ddpm/internal/rng"
	"ddpm/optim"
	"ddpm/unet"
)

// Errors returned by the trainer; operational failures wrap one of these.
var (
	// ErrDiverged: MaxNonFiniteSteps consecutive steps had a non-finite gradient on some rank.
	ErrDiverged = errors.New("trainer: training diverged")
	// ErrMismatch: a checkpoint or dataset that does not belong to this run (another model
	// preset, another config, another dataset).
	ErrMismatch = errors.New("trainer: does not match the run")
	// ErrFinished: Step was called after the run's last step.
	ErrFinished = errors.New("trainer: run already finished")
	// ErrData: this trainer's copy of the run's data is not the run's: a record could not be
	// read (a prepared shard whose sha256 differs from its index, an image that no longer
	// decodes), or its fingerprint differs from the one the run's checkpoints were trained on.
	// It wraps the dataset's error, which names the file, and says what to do; data of another
	// fingerprint, which was read, says "this trainer's dataset is not the run's" instead. No restart or
	// new generation of this trainer reads other bytes, so it cannot go on; it is this
	// trainer's own failure, not the run's (FailsRun).
	ErrData = errors.New("trainer: the dataset cannot be read")
	// ErrVolume: this trainer's checkpoint file could not be read or written (a full disk, an
	// I/O error, a damaged file); it wraps the checkpoint package's error, which names the file
	// and the cause. It is this trainer's own failure, not the run's (FailsRun).
	ErrVolume = errors.New("trainer: this trainer's volume")
	// ErrInitGone: a generation starts at step 0, from the --init weights, and this trainer
	// could not read them (DeferInit: moved or deleted since the run started). It wraps the
	// read's error, which names the file. It is this trainer's own failure, not the run's.
	ErrInitGone = errors.New("trainer: the run starts at step 0 from the --init weights, which this trainer cannot read")
	// ErrAssignmentsClosed: the coordinators ended this trainer's assignment stream (a cluster
	// trainer's Coordinator says why in its own error, e.g. the run failed).
	ErrAssignmentsClosed = errors.New("trainer: the coordinator closed the assignment stream")
)

// MaxNonFiniteSteps is how many consecutive skipped (non-finite) steps end the run with
// ErrDiverged. One bad batch is survivable; a run that keeps producing NaN is not. The count
// travels in checkpoints (NonFiniteStreak), so a resumed run stops at the step the same run
// uninterrupted does.
const MaxNonFiniteSteps = 5

// Reducer sums buf element-wise over all ranks of the current generation, in place, leaving
// bitwise-identical bytes on every rank. *allreduce.Ring satisfies it.
type Reducer interface {
	AllReduce(ctx context.Context, buf []float32) error
}

// Solo is the Reducer of a world of one: the sum over one rank is the buffer itself.
type Solo struct{}

// AllReduce leaves buf as it is.
func (Solo) AllReduce(context.Context, []float32) error { return nil }

// Trainer holds one rank's replica: the model (parameters and gradients), Adam's moments, the EMA
// of the parameters and the step counter, plus the buffers one step needs (allocated once).
type Trainer struct {
	run   config.Run
	model *unet.Model
	sched *diffusion.Schedule
	data  dataset.Dataset
	samp  dataset.Sampler
	adam  *optim.Adam
	ema   []float32
	step  int64 // steps completed; the next step to run

	rank, world int
	gen         uint64
	red         Reducer
	badRun      int       // consecutive skipped steps (saved in checkpoints: runRecord)
	initial     []float32 // step-0 weights from InitFrom; nil: the seed's initialization
	// start is the run's start record, kept in every checkpoint's RNG field (InitSHA256): nil
	// for the seed's initialization, else initRecord + the sha256 of the --init weights. Reset
	// takes this trainer's own (initStart), Restore the checkpoint's: a trainer that resumes a
	// run it did not start carries the run's record, whatever its own --init.
	start, initStart []byte
	// initErr is why the --init weights given to this trainer could not be read (DeferInit):
	// nil when they were read or none were given. A generation that starts at step 0 fails
	// with it; one that resumes from a checkpoint does not need them.
	initErr error

	c, h, w int
	// per-step buffers, sized for the largest slice a rank can get (ceil(G / world))
	x0, xt, eps, dEps []float32
	t                 []int32
	pos               []uint64
	perSample         []float64
	flat              []float32 // [grads..., lossSum, count, nonFinite, quartiles...]: the one all-reduce
	lastEnd           time.Time // when the previous step returned (for the wait phase)
}

// Layout of the all-reduce buffer after the gradients.
const (
	slotLoss      = 0 // sum of L_simple over the rank's samples
	slotCount     = 1 // number of samples
	slotNonFinite = 2 // 1 if the rank's gradient or loss is not finite
	slotQuartiles = 3 // metrics.QuartileSlots sums and counts of L_simple by timestep quartile
	extraSlots    = slotQuartiles + metrics.QuartileSlots
)

// New builds a rank's replica for run on data: the U-Net of run.Model initialized from run.Seed
// (so every rank starts bitwise equal), the EMA as a copy of the initial parameters (as the
// original), Adam at step 0, and world 1 (Solo) until SetRing. It returns ErrMismatch wrapped
// when data's image shape differs from the model's.
func New(run config.Run, data dataset.Dataset) (*Trainer, error) {
	if err := run.Validate(); err != nil {
		return nil, err
	}
	ucfg, err := unet.Preset(run.Model)
	if err != nil {
		return nil, err
	}
	ucfg.Dropout = run.Dropout
	c, h, w := data.Shape()
	if ucfg.InCh != c || ucfg.Resolution != h || h != w {
		return nil, fmt.Errorf("%w: dataset %s has %dx%dx%d images, model %q wants %dx%dx%d",
			ErrMismatch, data.Name(), c, h, w, run.Model, ucfg.InCh, ucfg.Resolution, ucfg.Resolution)
	}
	m, err := unet.New(ucfg)
	if err != nil {
		return nil, err
	}
	m.Init(run.Seed)
	sched, err := NewSchedule(run)
	if err != nil {
		return nil, err
	}
	tr := &Trainer{
		run: run, model: m, sched: sched, data: data, samp: dataset.NewSampler(run.Seed, data.Len()),
		adam: optim.NewAdam(len(m.Params())), ema: append([]float32(nil), m.Params()...),
		c: c, h: h, w: w,
	}
	tr.SetRing(Solo{}, 0, 1, 0)
	return tr, nil
}

// NewSchedule is the diffusion schedule the run config names (beta schedule, T, betas).
func NewSchedule(run config.Run) (*diffusion.Schedule, error) {
	return diffusion.NewSchedule(diffusion.ScheduleConfig{
		Kind: run.BetaSchedule, T: run.T, BetaStart: run.BetaStart, BetaEnd: run.BetaEnd})
}

// SetRing makes the trainer rank of a world of world ranks in generation gen, exchanging
// gradients through red. It resizes the per-step buffers.
func (tr *Trainer) SetRing(red Reducer, rank, world int, gen uint64) {
	if world < 1 || rank < 0 || rank >= world {
		panic(fmt.Sprintf("trainer: SetRing(rank=%d, world=%d)", rank, world))
	}
	tr.red, tr.rank, tr.world, tr.gen = red, rank, world, gen
	maxB := (tr.run.GlobalBatch + world - 1) / world
	d := tr.c * tr.h * tr.w
	tr.x0 = make([]float32, maxB*d)
	tr.xt = make([]float32, maxB*d)
	tr.eps = make([]float32, maxB*d)
	tr.dEps = make([]float32, maxB*d)
	tr.t = make([]int32, maxB)
	tr.pos = make([]uint64, maxB)
	tr.perSample = make([]float64, maxB)
	tr.flat = make([]float32, len(tr.model.Params())+extraSlots)
}

// StepCount is the number of steps completed (the next step's index).
func (tr *Trainer) StepCount() int64 { return tr.step }

// Generation is the cluster generation of the last SetRing (0 before any).
func (tr *Trainer) Generation() uint64 { return tr.gen }

// Model is the replica's network (its Params arena holds the current parameters).
func (tr *Trainer) Model() *unet.Model { return tr.model }

// EMA is the arena of the parameters' exponential moving average (same layout as Params).
func (tr *Trainer) EMA() []float32 { return tr.ema }

// Adam is the optimizer state (moments and step).
func (tr *Trainer) Adam() *optim.Adam { return tr.adam }

// Step runs one global step (DESIGN.md section 3) and returns what it measured. On error (the
// all-reduce failed: a peer died or a new generation aborted it) the replica is unchanged, so
// the caller can rebuild the ring and retry the same step, or reload a checkpoint.
func (tr *Trainer) Step(ctx context.Context) (Progress, error) {
	if tr.step >= tr.run.Steps {
		return Progress{}, ErrFinished
	}
	start := time.Now()
	G := tr.run.GlobalBatch
	D := tr.c * tr.h * tr.w
	seed := tr.run.Seed

	// This rank's contiguous share of the step's global positions [s*G, (s+1)*G).
	lo, hi := dataset.RankSlice(tr.step, G, tr.world, tr.rank)
	B := int(hi - lo)

	// The batch: image, flip, t ~ U{0..T-1} and eps ~ N(0, I) of each sample come from streams
	// keyed by (seed, position) alone.
	var src rng.Source
	for i := range B {
		p := lo + uint64(i)
		tr.pos[i] = p
		x0 := tr.x0[i*D : (i+1)*D]
		k := tr.samp.Index(p)
		if err := tr.image(k, x0); err != nil {
			// The record's index goes with the error: a restart reads that record again
			// (Fault.Recheck) before it joins.
			return Progress{}, &recordError{record: k, err: tr.dataError(err)}
		}
		if tr.run.Flip && dataset.Flip(seed, p) {
			dataset.FlipW(x0, tr.c, tr.h, tr.w)
		}
		src.Reset(seed, rng.Stream(p, rng.PurposeTimestep))
		tr.t[i] = int32(src.Intn(tr.run.T))
		src.Reset(seed, rng.Stream(p, rng.PurposeNoise))
		src.FillNormal(tr.eps[i*D : (i+1)*D])
	}
	x0, xt, eps, dEps, t := tr.x0[:B*D], tr.xt[:B*D], tr.eps[:B*D], tr.dEps[:B*D], tr.t[:B]

	// x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps (eq. 4), then eps_theta(x_t, t).
	tr.model.ZeroGrads()
	var lossSum float64
	if B > 0 {
		tr.sched.QSample(xt, x0, eps, t, B)
		pred := tr.model.Forward(xt, t, B, &unet.DropoutKey{Seed: seed, Positions: tr.pos[:B]})
		// L_simple (eq. 14) summed over my samples; its gradient is that of the sum. The 1/G of
		// the batch mean is applied after the all-reduce, so every rank's share weighs the same.
		diffusion.LSimple(tr.perSample[:B], eps, pred, B)
		for _, l := range tr.perSample[:B] {
			lossSum += l
		}
		diffusion.LSimpleGrad(dEps, eps, pred, B)
		tr.model.Backward(dEps)
	}

	// One all-reduce carries the gradients, the loss sum, the sample count, the non-finite
	// flag and the loss by timestep quartile, so all ranks decide the same thing from the same
	// bytes. This is the step's sync point.
	grads := tr.model.Grads()
	n := len(grads)
	copy(tr.flat, grads)
	extra := tr.flat[n:]
	clear(extra)
	extra[slotLoss], extra[slotCount] = float32(lossSum), float32(B)
	metrics.AddQuartiles(extra[slotQuartiles:], tr.perSample[:B], t, tr.run.T)
	if !allFinite(tr.flat[:n+1]) {
		extra[slotNonFinite] = 1
	}
	arStart := time.Now()
	if err := tr.red.AllReduce(ctx, tr.flat); err != nil {
		return Progress{}, err
	}
	arSec := time.Since(arStart).Seconds()
	gsum, count, bad := tr.flat[:n], float64(extra[slotCount]), extra[slotNonFinite]
	if int(count) != G {
		panic(fmt.Sprintf("trainer: all-reduced sample count %v, global batch %d", count, G))
	}
	loss := float64(extra[slotLoss]) / count

	p := Progress{Step: tr.step + 1, Loss: loss, Generation: tr.gen, Rank: tr.rank, World: tr.world,
		LossQuartiles: metrics.QuartileMeans(extra[slotQuartiles:]),
		ComputeSec:    arStart.Sub(start).Seconds(), AllReduceSec: arSec,
		BusBW: metrics.BusBW(4*len(tr.flat), arSec, tr.world)}
	if !tr.lastEnd.IsZero() {
		p.WaitSec = start.Sub(tr.lastEnd).Seconds()
	}
	defer func() { tr.lastEnd = time.Now() }()
	p.LR = optim.WarmupLR(tr.adam.Step, tr.run.LR, tr.run.WarmupSteps)
	if bad == 0 {
		// The sum over ranks becomes the mean over the global batch; then clip the global
		// gradient (DESIGN.md section 3: unlike the original's per-core clipping).
		optim.Scale(gsum, 1/count)
		if tr.run.GradClip > 0 {
			p.GradNorm = optim.ClipGlobalNorm(gsum, tr.run.GradClip)
		} else {
			p.GradNorm = optim.GlobalNorm(gsum)
		}
		if math.IsInf(p.GradNorm, 0) || math.IsNaN(p.GradNorm) {
			bad = 1 // finite parts can still overflow when squared and summed
		}
	}
	if bad != 0 {
		// Every rank sees the same flag and skips together; the data stream moves on.
		tr.badRun++
		tr.step++
		// The gradient holds a non-finite value: it has no norm. NaN also keeps the step out
		// of the coordinators' loss history (they take finite metrics only) and marks its row
		// in ddpm local's loss.csv.
		p.Skipped, p.GradNorm = true, math.NaN()
		if tr.badRun >= MaxNonFiniteSteps {
			return p, fmt.Errorf("%w: %d consecutive steps with non-finite gradients (last step %d)", ErrDiverged, tr.badRun, tr.step)
		}
		return p, nil
	}
	tr.badRun = 0
	tr.adam.Update(tr.model.Params(), gsum, p.LR)
	optim.EMAUpdate(tr.ema, tr.model.Params(), tr.run.EMADecay)
	tr.step++
	p.ImagesPerS = float64(G) / time.Since(start).Seconds()
	return p, nil
}

// image reads record i of tr's dataset into dst (dataset.Dataset.Image). A prepared copy's
// shards are mapped into memory; one cut short under the running trainer (truncated, or
// rewritten smaller) faults (SIGBUS) at the first read past its new end, which crashed the
// process with a runtime trace, without leaving the cluster or recording the fault. The fault is
// turned into the read's error here (runtime/debug.SetPanicOnFault, this goroutine only, for the
// read's duration), naming the record and the dataset: a step leaves the run on it as on
// any record it cannot read (ErrData, its record index recorded). Other panics pass on.
func (tr *Trainer) image(i int, dst []float32) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if _, ok := r.(interface{ Addr() uintptr }); ok {
			err = fmt.Errorf("record %d of %s: a memory fault reading the file that holds it (SIGBUS): the file was cut short under the running trainer", i, tr.run.Dataset)
			return
		}
		panic(r)
	}()
	return tr.data.Image(i, dst)
}

// dataError is ErrData for err, a record of the dataset that could not be read, with the way
// out. The dataset was opened with every check its format has (a prepared copy's index and shard
// sizes, every image of a folder decoded for its fingerprint), so such a record is this
// trainer's copy of the data gone bad since: a shard whose bytes differ from the sha256 its
// index pins, a file changed under the running trainer.
func (tr *Trainer) dataError(err error) error {
	if errors.Is(err, dataset.ErrIntegrity) {
		return fmt.Errorf("%w: %w; this trainer's copy of the run's data is damaged: copy the data over it again "+
			"(ddpm dataset inspect %s checks every shard) and %s", ErrData, err, tr.run.Dataset, RestartAdvice)
	}
	return fmt.Errorf("%w: %w; the data changed on this trainer's disk after it started: "+
		"put the run's data back and %s", ErrData, err, RestartAdvice)
}

// RestartAdvice ends the text of a failure of this trainer's own (its data: ErrData; its volume:
// VolumeCheckError) with the way on once the cause is fixed. A trainer that ddpm local started
// is started again by `ddpm local --resume RUN`, which cmd/ddpm says in its place.
const RestartAdvice = "start the trainer again"

func allFinite(x []float32) bool {
	for _, v := range x {
		if v-v != 0 { // NaN or +-Inf
			return false
		}
	}
	return true
}
