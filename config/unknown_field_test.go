package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestUnknownFieldHint: a key no run config field has is refused naming the file, its line and
// the field meant: one written with the flag's dashes (global-batch, EMA-Decay), one a
// letter or two off (stpes, emadecay, GlobalBatch), those it begins (heartbeat, beta: the
// ranking of config.Nearest; they got the list of fields), and else the list of fields. The line used to end at
// `unknown field "stpes"`.
func TestUnknownFieldHint(t *testing.T) {
	const all = "preset, model, dataset, dataset_fingerprint, seed, steps, global_batch, lr, warmup_steps, grad_clip, ema_decay, dropout, flip, t, beta_schedule, beta_start, beta_end, checkpoint_every, keep_checkpoints, min_trainers, max_trainers, heartbeat_timeout"
	p := filepath.Join(t.TempDir(), "run.yaml")
	for _, tc := range []struct{ doc, want string }{
		{"preset: mnist\n# steps below\nstpes: 100\n", `line 3: unknown field "stpes"; did you mean steps?`},
		{"preset: mnist\nglobal-batch: 64\n", `line 2: unknown field "global-batch"; did you mean global_batch? (a run config's fields are written with _, the flags with -)`},
		{"preset: mnist\nGlobalBatch: 64\n", `line 2: unknown field "GlobalBatch"; did you mean global_batch?`},
		{"preset: mnist\nEMA-Decay: 0.99\n", `line 2: unknown field "EMA-Decay"; did you mean ema_decay? (a run config's fields are written with _, the flags with -)`},
		{"preset: mnist\n\"emadecay\": 0.99\n", `line 2: unknown field "emadecay"; did you mean ema_decay?`},
		{"preset: mnist\nheartbeat: 10s\n", `line 2: unknown field "heartbeat"; did you mean heartbeat_timeout?`},
		{"preset: mnist\nbeta: 0.1\n", `line 2: unknown field "beta"; did you mean beta_schedule or beta_start or beta_end?`},
		{"preset: mnist\nbatch_size: 64\n", `line 2: unknown field "batch_size" (the fields: ` + all + `)`},
		{"preset: mnist\nx: 1\n", `line 2: unknown field "x" (the fields: ` + all + `)`},
	} {
		if err := os.WriteFile(p, []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		if want := p + ": cannot load run config: " + tc.want; !errors.Is(err, ErrLoad) || err.Error() != want {
			t.Errorf("%q:\n got %v\nwant %s", tc.doc, err, want)
		}
	}
}
