package main

import (
	"context"
	"testing"

	"github.com/spf13/pflag"

	"ddpm/config"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerRunConfigFromCoordinator: a cluster trainer given neither --config nor --preset
// (ddpm trainer --coordinator A --listen B --data-dir D, the documented start) takes the run
// config of a real coordinator over gRPC with mutual TLS, exactly (same hash), and the
// run-config flags given override its fields.
func TestTrainerRunConfigFromCoordinator(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.Seed = 40, 10, 3
	certs := tlsauthtest.Dir(t)
	addr, _ := startReplica(t, run, "test", certs)
	resolve := func(args ...string) (config.Run, error) {
		fs := pflag.NewFlagSet("trainer", pflag.ContinueOnError)
		rf := config.AddFlags(fs)
		o := trainerOpts{coordinator: addr, sec: tlsauth.AddFlags(fs)}
		if err := fs.Parse(append([]string{"--certs", certs}, args...)); err != nil {
			t.Fatal(err)
		}
		r, err := rf.Resolve()
		if err == nil {
			t.Fatalf("Resolve without --config or --preset: %+v", r)
		}
		return runFromCoordinator(context.Background(), rf, o)
	}
	got, err := resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != run.Hash() {
		t.Errorf("fetched config %.12s, the coordinator's %.12s: %+v", got.Hash(), run.Hash(), got)
	}
	got, err = resolve("--seed", "7")
	if err != nil {
		t.Fatal(err)
	}
	if want := run; got.Seed != 7 || got.Steps != want.Steps {
		t.Errorf("--seed 7 over the coordinator's config: %+v", got)
	}
}
