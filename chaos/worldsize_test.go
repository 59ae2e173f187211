package chaos

import (
	"context"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"ddpm/allreduce"
	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/dataset"
	"ddpm/trainer"
)

// Tolerances of the world-size tests. Other world sizes group the sum of the batch's gradients
// differently (each rank sums its share, then the ring adds the shares), which moves the float32
// parameters by rounding alone: after 10 steps of this run about 3e-7 at most, and the losses
// by under 1e-7 relative. A different draw (a sample's timestep, noise, flip or dropout mask
// keyed by its rank or its index in the rank's share instead of its global position) moves
// them by 1e-3 or more.
const (
	worldLossRel  = 1e-5 // relative difference of a step's loss between world sizes
	worldParamAbs = 2e-5 // largest |difference| of a parameter or EMA value between world sizes
)

// worldRun is the mnist preset cut down to 10 steps, with what the preset leaves off turned on
// so that every per-sample draw is exercised: dropout (a mask per sample and layer) and random
// flips. The global batch of 7 splits unevenly over 2 and 3 ranks (4+3, 3+2+2).
func worldRun(t *testing.T) (config.Run, dataset.Dataset) {
	t.Helper()
	r, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	r.Steps, r.GlobalBatch, r.LR, r.WarmupSteps, r.CheckpointEvery, r.Seed = 10, 7, 1e-3, 2, 5, 19
	r.Dropout, r.Flip = 0.1, true
	ds, err := dataset.Open(r.Dataset, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r, ds
}

// group is one generation: world trainers joined by a real ring all-reduce over gRPC on
// loopback (trainer.Solo for a world of one), all restored from the same checkpoint.
type group struct {
	trs   []*trainer.Trainer
	close func()
}

func newGroup(t *testing.T, run config.Run, ds dataset.Dataset, world int, gen uint64, from *checkpoint.Checkpoint) *group {
	t.Helper()
	g := &group{close: func() {}}
	for range world {
		tr, err := trainer.New(run, ds)
		if err != nil {
			t.Fatal(err)
		}
		if from != nil {
			if err := tr.Restore(from); err != nil {
				t.Fatal(err)
			}
		}
		g.trs = append(g.trs, tr)
	}
	if world == 1 {
		g.trs[0].SetRing(trainer.Solo{}, 0, 1, gen)
		return g
	}
	peers := make([]string, world)
	eps := make([]*allreduce.Endpoint, world)
	var servers []*grpc.Server
	for r := range world {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(allreduce.ServerOptions()...)
		eps[r] = allreduce.Register(srv)
		go srv.Serve(lis)
		servers = append(servers, srv)
		peers[r] = lis.Addr().String()
	}
	var rings []*allreduce.Ring
	for r := range world {
		ring, err := allreduce.NewRing(eps[r], allreduce.Config{Generation: gen, Rank: r, Peers: peers,
			DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}})
		if err != nil {
			t.Fatal(err)
		}
		rings = append(rings, ring)
		g.trs[r].SetRing(ring, r, world, gen)
	}
	g.close = func() {
		for _, r := range rings {
			r.Close()
		}
		for _, s := range servers {
			s.Stop()
		}
	}
	t.Cleanup(g.close)
	return g
}

// steps runs every rank to step `to` and returns the loss of each step taken (all ranks must
// report the same one).
func (g *group) steps(t *testing.T, to int64) []float64 {
	t.Helper()
	var losses []float64
	for g.trs[0].StepCount() < to {
		got := make([]trainer.Progress, len(g.trs))
		errs := make([]error, len(g.trs))
		var wg sync.WaitGroup
		for r, tr := range g.trs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[r], errs[r] = tr.Step(context.Background())
			}()
		}
		wg.Wait()
		for r := range g.trs {
			if errs[r] != nil {
				t.Fatalf("rank %d of %d, step %d: %v", r, len(g.trs), got[r].Step, errs[r])
			}
			if got[r].Loss != got[0].Loss {
				t.Fatalf("step %d: rank %d reports loss %v, rank 0 %v", got[0].Step, r, got[r].Loss, got[0].Loss)
			}
		}
		losses = append(losses, got[0].Loss)
	}
	return losses
}

// state is rank 0's checkpoint of the group's current step, after checking that every rank's
// state hash (ddpm checkpoint list's STATE) is the same.
func (g *group) state(t *testing.T, fp string) *checkpoint.Checkpoint {
	t.Helper()
	c := g.trs[0].Snapshot(g.trs[0].Generation(), fp)
	for r, tr := range g.trs[1:] {
		if h, h0 := checkpoint.StateHash(tr.Snapshot(tr.Generation(), fp)), checkpoint.StateHash(c); h != h0 {
			t.Fatalf("step %d: rank %d's state hash %.12s, rank 0's %.12s", c.Step, r+1, h, h0)
		}
	}
	return c
}

// closeTo fails unless a and b (the same run at the same step, reached through different world
// sizes or resumes) differ by float rounding only: losses within worldLossRel, parameters and
// EMA within worldParamAbs. It returns the largest parameter or EMA difference.
func closeTo(t *testing.T, what string, la, lb []float64, a, b *checkpoint.Checkpoint) float64 {
	t.Helper()
	if len(la) != len(lb) {
		t.Fatalf("%s: %d losses, want %d", what, len(la), len(lb))
	}
	for i := range la {
		if rel := math.Abs(la[i]-lb[i]) / math.Abs(lb[i]); !(rel <= worldLossRel) {
			t.Errorf("%s: loss %.8g, want %.8g (relative %.2g > %g): not the same samples, timesteps, noise, flips or dropout masks",
				what, la[i], lb[i], rel, worldLossRel)
			break
		}
	}
	if a.Step != b.Step || a.OptStep != b.OptStep || a.Cursor != b.Cursor {
		t.Fatalf("%s: step %d (Adam %d, cursor %d), want %d (%d, %d)", what, a.Step, a.OptStep, a.Cursor, b.Step, b.OptStep, b.Cursor)
	}
	worst := 0.0
	for _, p := range [][2][]float32{{a.Params, b.Params}, {a.EMA, b.EMA}} {
		for i := range p[0] {
			worst = math.Max(worst, math.Abs(float64(p[0][i])-float64(p[1][i])))
		}
	}
	if !(worst <= worldParamAbs) {
		t.Errorf("%s: parameters or EMA differ by up to %.3g at step %d (> %g): more than float rounding", what, worst, a.Step, worldParamAbs)
	}
	return worst
}

// TestTrajectoryIndependentOfWorld checks the promise of DESIGN.md section 3 on the real ring
// all-reduce, with dropout and flips on and a global batch that no world of 2 or 3 divides:
//
//   - 1, 2 and 3 ranks take the same steps up to float rounding (losses and weights, tolerances
//     above), since every sample's draws are keyed by (seed, global position), not by rank;
//   - a world of 3 stopped at its step-5 checkpoint (saved to and read back from a real bbolt
//     store) and resumed by 3 new ranks ends with the state hash of the uninterrupted run
//     (bit for bit, as ddpm checkpoint list's STATE shows);
//   - resumed by 2 ranks or 1 instead (a resize after a failure), it ends within rounding of it.
func TestTrajectoryIndependentOfWorld(t *testing.T) {
	run, ds := worldRun(t)
	fp := ds.Fingerprint()
	losses := map[int][]float64{}
	final := map[int]*checkpoint.Checkpoint{}
	for _, world := range []int{1, 2, 3} {
		g := newGroup(t, run, ds, world, 1, nil)
		losses[world] = g.steps(t, run.Steps)
		final[world] = g.state(t, fp)
		g.close()
	}
	for _, world := range []int{2, 3} {
		d := closeTo(t, fmt.Sprintf("world %d vs 1", world), losses[world], losses[1], final[world], final[1])
		t.Logf("world %d vs 1 at step %d: parameters and EMA within %.3g", world, run.Steps, d)
	}

	// World 3 to its step-5 checkpoint, through a real checkpoint store.
	g := newGroup(t, run, ds, 3, 1, nil)
	first := g.steps(t, run.CheckpointEvery)
	path := filepath.Join(t.TempDir(), trainer.CheckpointFile)
	st, err := checkpoint.Open(path, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(g.state(t, fp)); err != nil {
		t.Fatal(err)
	}
	g.close()
	saved, err := st.Get(run.CheckpointEvery)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	want := checkpoint.StateHash(final[3])
	for _, world := range []int{3, 2, 1} {
		g := newGroup(t, run, ds, world, 2, saved)
		rest := g.steps(t, run.Steps)
		got := g.state(t, fp)
		g.close()
		all := append(append([]float64(nil), first...), rest...)
		if world == 3 {
			if h := checkpoint.StateHash(got); h != want {
				d := closeTo(t, "world 3 resumed at step 5", all, losses[3], got, final[3])
				t.Fatalf("world 3 stopped at step %d and resumed by 3 ranks: state hash %.12s at step %d, the uninterrupted run's %.12s (weights up to %.3g apart)",
					run.CheckpointEvery, h, got.Step, want, d)
			}
			for i := range all {
				if all[i] != losses[3][i] {
					t.Fatalf("world 3 resumed: step %d loss %v, uninterrupted %v", i+1, all[i], losses[3][i])
				}
			}
			continue
		}
		d := closeTo(t, fmt.Sprintf("world 3 resumed by %d", world), all, losses[3], got, final[3])
		t.Logf("world 3 stopped at step %d, resumed by %d rank(s): within %.3g of the uninterrupted run at step %d", run.CheckpointEvery, world, d, run.Steps)
	}
}
