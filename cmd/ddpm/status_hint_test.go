package main

import (
	"bytes"
	"strings"
	"testing"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
)

// TestStatusRollbackHintRunsAsPrinted: the rollback command ddpm status suggests while the run
// waits for a lost holder repeats the status command's own --certs DIR (or --insecure): without
// it, the command as printed failed with "choose TLS (--certs DIR) or plain text (--insecure)".
func TestStatusRollbackHintRunsAsPrinted(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	st := &fsm.State{
		Run:    &run,
		Status: fsm.StatusRunning,
		Members: map[string]*fsm.Member{
			"b": {ID: "b", Address: "127.0.0.1:7100", State: fsm.MemberWaiting},
		},
		Checkpoints: []fsm.Checkpoint{
			{Step: 20, SHA256: strings.Repeat("a", 64), Holders: []string{"b"}},
			{Step: 40, SHA256: strings.Repeat("b", 64), Holders: []string{"a"}},
		},
	}
	resp := &api.StatusResponse{ReplicaId: "c0", LeaderId: "c0", Replicas: []string{"127.0.0.1:7001", "127.0.0.1:7002"}}
	for _, tc := range []struct {
		sec  tlsauth.Config
		want string
	}{
		{tlsauth.Config{Dir: "runs/r/certs"}, " --certs runs/r/certs"},
		{tlsauth.Config{Insecure: true}, " --insecure"},
		{tlsauth.Config{}, ""},
	} {
		var out bytes.Buffer
		if err := writeStatus(&out, resp, st, secFlags(&tc.sec)); err != nil {
			t.Fatal(err)
		}
		want := "waiting         for a holder of checkpoint 40 (a) to rejoin; if none can: " +
			"ddpm checkpoint rollback --coordinator 127.0.0.1:7001,127.0.0.1:7002 --to-step 20" + tc.want + "\n"
		if lines := strings.SplitAfter(out.String(), "\n"); len(lines) < 2 || lines[1] != want {
			t.Errorf("%+v: status\n%s\nwant its second line %q", tc.sec, out.String(), want)
		}
	}
}
