package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
)

// runConfigWait bounds how long a trainer started without --config or --preset waits for the
// coordinators' run config (a variable only so that tests shorten it); runConfigPoll is how
// often it asks while they answer but hold none yet.
var runConfigWait = 30 * time.Second

const runConfigPoll = 200 * time.Millisecond

// runFromCoordinator is the run config of a cluster trainer started with neither --config nor
// --preset: the one the coordinators hold (their Status), with the run-config flags given
// applied over it (a field changed that way makes a config the coordinators refuse at Join,
// naming both hashes). It writes nothing. Errors are one line: no coordinator answering within
// runConfigWait (status 1), coordinators without a run config yet (status 2), SIGINT or SIGTERM
// during the wait (status 130, at once).
func runFromCoordinator(ctx context.Context, rf *config.Flags, o trainerOpts) (config.Run, error) {
	sec, err := loadSecurity(o.sec, nil)
	if err != nil {
		return config.Run{}, err
	}
	// Nothing is written yet: a signal during the wait ends it at once.
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	addrs := strings.Split(o.coordinator, ",")
	cli, err := coordinator.Dial(addrs, sec, coordinator.WithAttemptTimeout(min(runConfigWait, 2*time.Second)))
	if err != nil {
		return config.Run{}, withExit(2, fmt.Errorf("--coordinator %s: %w", o.coordinator, err))
	}
	defer cli.Close()
	// A new cluster's leader submits its run config once elected: ask again until it has.
	wctx, cancel := context.WithTimeout(ctx, runConfigWait)
	defer cancel()
	interrupted := func() error {
		return withExit(exitInterrupted, fmt.Errorf("trainer interrupted while waiting for the run config of the coordinators at %s; nothing was written", o.coordinator))
	}
	var run config.Run
	var wrongPort *coordinator.NotCoordinatorError
	for {
		resp, err := cli.Status(wctx)
		switch {
		case ctx.Err() != nil:
			return config.Run{}, interrupted()
		case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, coordinator.ErrUnavailable)):
			why := ""
			if h := coordinator.Hint(err); h != "" {
				why = ": " + h
			}
			return config.Run{}, withExit(1, fmt.Errorf("no run config: neither --config nor --preset was given, and no coordinator answered at %s within %v%s; give --config FILE or --preset NAME, or check --coordinator", o.coordinator, runConfigWait, why))
		case err != nil && errors.As(err, &wrongPort):
			// --coordinator names no coordinator's gRPC port (a raft or HTTP port, a trainer's):
			// the command line to change, as ddpm status says it.
			return config.Run{}, withExit(2, errors.New(wrongPort.Msg))
		case err != nil:
			if h := coordinator.Hint(err); h != "" {
				return config.Run{}, withExit(1, fmt.Errorf("no run config: asking the coordinators at %s for theirs: %s (%w)", o.coordinator, h, err))
			}
			return config.Run{}, withExit(1, fmt.Errorf("no run config: asking the coordinators at %s for theirs: %w", o.coordinator, err))
		}
		st, err := fsm.Decode(resp.StateJson)
		if err != nil {
			return config.Run{}, withExit(1, fmt.Errorf("no run config: the state of the coordinators at %s: %w", o.coordinator, err))
		}
		if st.Run != nil {
			run = *st.Run
			break
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return config.Run{}, interrupted()
			}
			return config.Run{}, withExit(2, fmt.Errorf("no run config: the coordinators at %s held none within %v (a coordinator takes it with --config or --preset), and neither --config nor --preset was given", o.coordinator, runConfigWait))
		case <-time.After(runConfigPoll):
		}
	}
	rf.Apply(&run)
	if err := run.Validate(); err != nil {
		return config.Run{}, withExit(2, fmt.Errorf("the coordinators' run config with the flags given: %w", err))
	}
	return run, nil
}
