package trainer

import (
	"context"
	"testing"

	"ddpm/config"
	"ddpm/dataset"
)

func mnistRun(t testing.TB, steps int64) (config.Run, dataset.Dataset) {
	t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.GlobalBatch, run.WarmupSteps, run.LR = steps, 16, 5, 1e-3
	run.CheckpointEvery = steps
	run.Seed = 7
	ds, err := dataset.Open(run.Dataset, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return run, ds
}

func TestLossFallsWorldOne(t *testing.T) {
	run, ds := mnistRun(t, 60)
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	var first, last float64
	for i := range run.Steps {
		p, err := tr.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i < 10 {
			first += p.Loss / 10
		}
		if i >= run.Steps-10 {
			last += p.Loss / 10
		}
		t.Logf("step %d loss %.4f norm %.3f lr %.2g %.1f img/s", p.Step, p.Loss, p.GradNorm, p.LR, p.ImagesPerS)
	}
	if !(last < 0.5*first) {
		t.Fatalf("loss did not fall by half: first 10 steps %.4f, last 10 %.4f", first, last)
	}
}
