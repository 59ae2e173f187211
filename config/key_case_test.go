package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// TestKeyCase: a run config's keys are the fields' names exactly; one in other capitals
// (Steps, STEPS, LR, Preset, in YAML or JSON) is refused as any unknown key is, naming the file,
// the line and the field meant, through Load and through the flags' --config. The JSON decoder
// under the YAML one matched keys without regard to case, so `Steps: 10` trained 10 steps. The
// run configs ddpm writes and ships still load.
func TestKeyCase(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ doc, want string }{
		{"preset: mnist\nSteps: 10\n", `line 2: unknown field "Steps"; did you mean steps?`},
		{"preset: mnist\nsteps: 10\n# rate\nLR: 0.001\n", `line 4: unknown field "LR"; did you mean lr?`},
		{"Preset: mnist\nsteps: 10\n", `line 1: unknown field "Preset"; did you mean preset?`},
		// The first such key by line, whatever the map order.
		{"preset: mnist\nSEED: 1\nGlobal_Batch: 8\nSTEPS: 10\n", `line 2: unknown field "SEED"; did you mean seed?`},
		{"preset: mnist\nHeartbeat_Timeout: 10s\n", `line 2: unknown field "Heartbeat_Timeout"; did you mean heartbeat_timeout?`},
		// A JSON document: no key lines to name.
		{`{"preset": "mnist", "Steps": 10}`, `unknown field "Steps"; did you mean steps?`},
	} {
		p := filepath.Join(dir, "run.yaml")
		if err := os.WriteFile(p, []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		want := p + ": cannot load run config: " + tc.want
		if r, err := Load(p); !errors.Is(err, ErrLoad) || err.Error() != want {
			t.Errorf("Load %q:\n got %v (steps %d)\nwant %s", tc.doc, err, r.Steps, want)
		}
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse([]string{"--config", p}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Resolve(); !errors.Is(err, ErrLoad) || err.Error() != want {
			t.Errorf("--config %q:\n got %v\nwant %s", tc.doc, err, want)
		}
	}

	// What ddpm writes (run.yaml of every preset, as ddpm local and the trainers write it) and
	// ships (demo/, deploy/k8s/) uses the exact names and loads as before.
	for _, name := range Presets() {
		r, _ := Preset(name)
		if r.Dataset == "" {
			r.Dataset = "/data"
		}
		back, err := Parse(r.Marshal())
		if err != nil || back != r {
			t.Errorf("preset %s: Parse(Marshal) = %+v, %v; want %+v", name, back, err, r)
		}
	}
	for _, p := range []string{"../demo/mnist-demo.yaml", "../demo/mnist-pretrain.yaml", "../demo/mnist-pretrain-cont.yaml",
		"../deploy/k8s/base/run.yaml", "../deploy/k8s/overlays/gpu/run.yaml"} {
		r, err := Load(p)
		if err != nil || r.Preset == "" || r.Steps <= 0 {
			t.Errorf("Load %s = preset %q, steps %d, %v; want it to load", p, r.Preset, r.Steps, err)
		}
	}
}
