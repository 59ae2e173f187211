package main

import (
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"ddpm/internal/localrun"
)

// TestStatusS25StoppedRunPortServedByOther: `ddpm status RUN` and `ddpm loss RUN` of a stopped
// ddpm local run whose recorded coordinator port another program now serves (here an HTTP
// server of the test process) say the run is not running and what holds the port, which
// `ddpm local --resume RUN` needs free, exit 1. They said the address "answers in plain text,
// not gRPC ...: --coordinator takes a coordinator's --grpc-addr", exit 2, naming a flag the
// command line did not give.
func TestStatusS25StoppedRunPortServedByOther(t *testing.T) {
	dir, grpc := stoppedRunFixture(t)
	l, err := net.Listen("tcp", grpc)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(grpc)
	p, _ := strconv.Atoi(port)
	h, ok := localrun.FindPortHolder(p)
	if !ok || !strings.Contains(h.HeldBy(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("FindPortHolder(%d) = %+v, %v; want this test process (pid %d)", p, h, ok, os.Getpid())
	}
	held := "the ddpm local run " + dir + " is not running: another program now answers at its coordinator's port " + grpc +
		" (" + h.HeldBy() + "), which ddpm local --resume " + dir + " needs free; "
	nuWant(t, 1, "ddpm: status: "+held+"ddpm checkpoint list "+dir+" lists its checkpoints", "status", dir)
	nuWant(t, 1, "ddpm: loss: "+held+"it has no loss history yet (no "+dir+"/"+localrun.LossCSV+")", "loss", dir)
}
