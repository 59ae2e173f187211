# ddpm — the project's vocabulary. `make demo` and `make test` do all set-up on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
BIN := bin/ddpm
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X ddpm/internal/version.Version=$(VERSION)
# Tests: one package at a time keeps the 2-core CI machine from thrashing; the timeout bounds a hang.
TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all setup setup-build build test race bench bench-checkpoint lint demo proto fuzz chaos image clean

all: build

setup:        ## install everything the tests need (apt packages, Go modules); idempotent
	@scripts/setup.sh test

setup-build:  ## install what building and the demo need; idempotent
	@scripts/setup.sh build

build: setup-build
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ddpm

test: setup build
	$(GO) test $(TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory fuzz-short

race: setup
	$(GO) test -race $(TEST_FLAGS) ./...

bench: setup build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

bench-checkpoint: ## checkpoint Save/Get of the cifar10 state (572 MB) vs plain write+fsync/read, alternately, DDPM_BENCH_ROUNDS rounds (default 6, pruning to 3 like a trainer); first save and steady-state ratios (DDPM_BENCH_DIR picks the disk)
	DDPM_CHECKPOINT_BENCH=1 $(GO) test -run '^$$' -bench BenchmarkCIFAR10State -benchtime 1x -timeout 20m ./checkpoint

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: build  ## 3 raft coordinators + 2 trainers on MNIST as real processes; leaves RUN/samples.png, loss.png, loss.csv
	@out=$${DEMO_OUT:-runs/demo-$$(date +%Y%m%d-%H%M%S)}; set -x; \
	$(BIN) local --config demo/mnist-demo.yaml --init demo/mnist-tiny.safetensors \
		--trainers 2 --coordinators 3 --samples 25 --out "$$out" && \
	echo "make demo: see $$out/samples.png and $$out/loss.png"

proto:       ## regenerate api/*.pb.go with protoc (Debian protobuf-compiler) and the plugins pinned in go.mod
	@scripts/setup.sh test
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc --plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
		-I api --go_out=. --go_opt=module=ddpm --go-grpc_out=. --go-grpc_opt=module=ddpm api/*.proto

clean:
	rm -rf bin

.PHONY: bench-data
bench-data:  ## loader images/s: MNIST, CIFAR-10 binary, LSUN-format prepared shards and raw WebP (issue 4)
	$(GO) test -run '^$$' -bench BenchmarkLoad -benchtime 10x ./dataset

.PHONY: bench-engine bench-sample
# ENGINE_THREADS: threads of each side (GOMAXPROCS; torch.set_num_threads). On a shared machine read the CPU ratios.
ENGINE_THREADS ?= 2
bench-engine: setup build  ## our U-Net vs PyTorch (bench/pytorch_engine.py), alternately, wall and CPU ratios: train and forward of small B16, cifar10 B8, tiny B16 (issues 3, 11)
	@set -e; for m in train forward; do \
		$(BIN) model compare --threads $(ENGINE_THREADS) --mode $$m --preset small --batch 16 --warmup 2 --steps 10 --rounds 2; \
		$(BIN) model compare --threads $(ENGINE_THREADS) --mode $$m --preset tiny --batch 16 --warmup 2 --steps 10 --rounds 2; \
		$(BIN) model compare --threads $(ENGINE_THREADS) --mode $$m --preset cifar10 --batch 8 --warmup 1 --steps 3 --rounds 1; done

bench-sample: setup build  ## sampling step (Algorithm 2) of the small preset, 64 images, ours vs PyTorch; x1000 for a full run (issue 11)
	$(BIN) model compare --threads $(ENGINE_THREADS) --mode sample --preset small --batch 64 --warmup 1 --steps 10 --rounds 2

.PHONY: web-assets
UPLOT_VERSION := 1.6.32
UPLOT_SHA256 := 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
web-assets:  ## re-vendor uPlot (pinned, sha256-checked npm tarball) into coordinator/web/assets (issue 9)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && cd $$tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null && \
	echo "$(UPLOT_SHA256)  uplot-$(UPLOT_VERSION).tgz" | sha256sum -c --quiet && tar xzf uplot-$(UPLOT_VERSION).tgz && \
	cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css $(CURDIR)/coordinator/web/assets/ && \
	cp package/LICENSE $(CURDIR)/coordinator/web/assets/uPlot.LICENSE && echo "vendored uPlot $(UPLOT_VERSION)"

.PHONY: bench-allreduce
ANCHORS ?= $(CURDIR)/../shared/anchors
ANCHOR_OUT ?= $(CURDIR)/bin/anchor-results
ANCHOR_FLAGS ?=
AR_PKGS := iperf3 openmpi-bin libopenmpi-dev python3-torch python3-numpy libopenblas0-pthread
bench-allreduce: build  ## ring all-reduce vs the anchors (iperf3, Open MPI, gloo) in one run; busbw ours/gloo (issue 5), then the plain-TCP Go floor. ANCHOR_FLAGS=--no-wait skips waiting for an idle machine
	@pk=""; for p in $(AR_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || pk="$$pk $$p"; done; \
	if [ -n "$$pk" ]; then echo "bench-allreduce: installing$$pk" >&2; SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pk >/dev/null; fi
	ANCHOR_OUT=$(ANCHOR_OUT) /usr/bin/python3 $(ANCHORS)/allreduce/run_all.py $(ANCHOR_FLAGS)
	set -o pipefail; $(BIN) bench allreduce --ranks 2,4 --sizes 1MiB,16MiB,64MiB,143MB --anchor $(ANCHOR_OUT)/allreduce/latest.json \
		--json $(ANCHOR_OUT)/allreduce/ddpm.json | tee $(ANCHOR_OUT)/allreduce/ddpm.md
	@echo; echo "the same ring on grpc-go's transport (what trainers with TLS run):"
	set -o pipefail; $(BIN) bench allreduce --transport grpc --ranks 2,4 --sizes 1MiB,16MiB,64MiB,143MB --anchor $(ANCHOR_OUT)/allreduce/latest.json \
		| tee $(ANCHOR_OUT)/allreduce/ddpm-grpc.md
	@echo; echo "floor: the same ring in Go on plain TCP, no gRPC (bench/tcpring, a diagnostic):"
	set -o pipefail; $(GO) run ./bench/tcpring --ranks 2,4 --bytes 143000000 | tee $(ANCHOR_OUT)/allreduce/tcpring.md

# Fuzz targets (issue 13) as package:Target. Plain `go test` already replays each target's seeds and
# its testdata/fuzz corpus; these targets mutate inputs. A crasher is written to
# PKG/testdata/fuzz/TARGET/: commit it with the fix, and it stays a regression test.
FUZZ_TARGETS := ./dataset:FuzzIdx ./dataset:FuzzCIFAR ./dataset:FuzzCIFARTar ./dataset:FuzzLSUNValue \
	./checkpoint:FuzzHeader ./checkpoint:FuzzStoreFile ./internal/safetensors:FuzzDecode ./config:FuzzLoad
FUZZTIME ?= 10m
# The short pass counts executions, not seconds: a duration -fuzztime races Go's fuzz coordinator at
# the deadline and can fail a clean target with "context deadline exceeded" (go.dev/issue/75804,
# unfixed in go1.26); a count has no deadline to race, and every machine does the same work.
FUZZTIME_SHORT ?= 5000x
.PHONY: fuzz-short
fuzz: setup  ## every fuzz target for FUZZTIME each (default 10m: about 80 minutes)
	@set -e; for t in $(FUZZ_TARGETS); do echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) $${t%%:*}; done

fuzz-short:  ## every fuzz target for FUZZTIME_SHORT executions each (part of make test)
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_SHORT)

# Container image from Containerfile (multi-stage; builds with podman or docker, whichever is
# installed, podman first). IMAGE names the result; push it where the cluster pulls from and set
# the same name under images: in deploy/k8s/base/kustomization.yaml.
IMAGE ?= localhost/ddpm:$(VERSION)
CONTAINER ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null || echo podman)
image:  ## build the container image $(IMAGE) with podman or docker (CONTAINER=docker to choose)
	$(CONTAINER) build -f Containerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

CHAOS_RUNS ?= 3
chaos: setup build  ## fault injection on real processes (issue 12): random kill/stop/leader/corrupt schedules on 3 trainers (CHAOS_RUNS runs), link cuts across network namespaces (root); figures in the log
	set -o pipefail; DDPM_CHAOS=1 DDPM_CHAOS_RUNS=$(CHAOS_RUNS) $(GO) test -count=1 -timeout 90m -v -run 'TestChaos|TestRefetch|TestRing' ./chaos 2>&1 | tee bin/chaos.log | grep -v ' event .* checkpoint: '
