package coordinator

import (
	"encoding/json"
	"testing"

	"ddpm/config"
)

// TestRunConflictS26Keys: the refusal of a replica whose run config differs from the one in
// force names each differing key (alphabetical, as in run.yaml) with the given value and the one
// in force, four at most and the rest counted; none when the given run is not known.
func TestRunConflictS26Keys(t *testing.T) {
	held, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	given := held
	given.LR, given.Steps = held.LR*2, held.Steps+1
	e := &RunConflictError{Where: "the cluster", InForce: &held, InForceHash: "0123456789abcdef", Given: "--config b.yaml",
		GivenHash: "fedcba9876543210", GivenRun: &given}
	want := "coordinator: the cluster runs config 0123456789ab (preset mnist, model " + held.Model + ", dataset " + held.Dataset +
		", 2000 steps), but --config b.yaml is config fedcba987654 (it has lr: 0.0004 where the cluster has 0.0002, " +
		"steps: 2001 where the cluster has 2000): start this replica with the cluster's run config (every replica needs the same one)"
	if held.Steps != 2000 || held.LR != 0.0002 {
		t.Fatalf("the mnist preset changed (steps %d, lr %g): update this test", held.Steps, held.LR)
	}
	if got := e.Error(); got != want {
		t.Errorf("two keys:\n%s\nwant\n%s", got, want)
	}
	given.Seed, given.Dropout, given.Flip, given.T = held.Seed+1, held.Dropout+0.5, !held.Flip, held.T+1
	e.Where = "--data-dir d"
	want = "coordinator: --data-dir d runs config 0123456789ab (preset mnist, model " + held.Model + ", dataset " + held.Dataset +
		", 2000 steps), but --config b.yaml is config fedcba987654 (it has dropout: " + fmtJSON(t, given.Dropout) +
		" where the data dir has " + fmtJSON(t, held.Dropout) + ", flip: " + fmtJSON(t, given.Flip) + " where the data dir has " +
		fmtJSON(t, held.Flip) + ", lr: 0.0004 where the data dir has 0.0002, seed: " + fmtJSON(t, given.Seed) +
		" where the data dir has " + fmtJSON(t, held.Seed) + ", and 2 more keys): restart it with that run's config, " +
		"or with a fresh --data-dir on every replica for a new run"
	if got := e.Error(); got != want {
		t.Errorf("six keys:\n%s\nwant\n%s", got, want)
	}
	e.GivenRun = nil
	if got := e.Error(); got != "coordinator: --data-dir d runs config 0123456789ab (preset mnist, model "+held.Model+", dataset "+
		held.Dataset+", 2000 steps), but --config b.yaml is config fedcba987654: restart it with that run's config, "+
		"or with a fresh --data-dir on every replica for a new run" {
		t.Errorf("given run unknown: %s", got)
	}
}

// fmtJSON is v as the refusal shows a value: its JSON.
func fmtJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
