package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"ddpm/config"
)

// runConfigWait bounds how long a trainer started without --config or --preset waits for the
// coordinators' run config; runConfigPoll is how often it asks while they hold none yet.
const (
	runConfigWait = 30 * time.Second
	runConfigPoll = 200 * time.Millisecond
)

// runFromCoordinator is the run config of a cluster trainer started with neither --config nor
// --preset: the one the coordinators hold (their Status), with the run-config flags given
// applied over it (a field changed that way makes a config the coordinators refuse at Join,
// naming both hashes). Errors are one line: no coordinator answering within runConfigWait
// (status 1), coordinators without a run config yet (status 2).
func runFromCoordinator(ctx context.Context, rf *config.Flags, o trainerOpts) (config.Run, error) {
	sec, err := loadSecurity(o.sec, nil)
	if err != nil {
		return config.Run{}, err
	}
	addrs := strings.Split(o.coordinator, ",")
	// A new cluster's leader submits its run config once elected: ask again until it has.
	deadline := time.Now().Add(runConfigWait)
	var run config.Run
	for {
		_, st, err := fetchState(ctx, addrs, sec, time.Until(deadline))
		if err != nil {
			return config.Run{}, withExit(1, fmt.Errorf("no run config: neither --config nor --preset was given, and the coordinators were asked for theirs: %w", err))
		}
		if st.Run != nil {
			run = *st.Run
			break
		}
		if time.Now().Add(runConfigPoll).After(deadline) || ctx.Err() != nil {
			return config.Run{}, withExit(2, fmt.Errorf("no run config: the coordinators at %s held none within %v (a coordinator takes it with --config or --preset), and neither --config nor --preset was given", o.coordinator, runConfigWait))
		}
		select {
		case <-ctx.Done():
		case <-time.After(runConfigPoll):
		}
	}
	rf.Apply(&run)
	if err := run.Validate(); err != nil {
		return config.Run{}, withExit(2, fmt.Errorf("the coordinators' run config with the flags given: %w", err))
	}
	return run, nil
}
