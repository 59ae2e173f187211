package coordinator

import (
	"fmt"
	"math"
	"net"
	"strconv"

	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/coordinator/fsm"
)

// Bounds on what a caller may send. Every request is checked against them before it is
// forwarded or proposed, so nothing malformed reaches the replicated log.
const (
	// MaxRequestBytes is the largest request message a replica accepts (gRPC's receive limit).
	MaxRequestBytes = 1 << 20
	// MaxResponseBytes is the largest answer a Client accepts: Status carries the whole
	// replicated state, loss history included.
	MaxResponseBytes = 64 << 20
	// MaxIDLen bounds member ids and request ids (a DNS name is at most 253 bytes).
	MaxIDLen = 253
	// MaxAddressLen bounds a member's host:port address.
	MaxAddressLen = 261
	// MaxVersionLen bounds the version string a trainer sends.
	MaxVersionLen = 128
	// MaxRunYAML bounds a submitted run config.
	MaxRunYAML = 64 << 10
	// MaxHeld bounds the checkpoints a joining trainer may list.
	MaxHeld = 1024
	// MaxFailureLen bounds the failure reason of a progress report.
	MaxFailureLen = 4096
	// MaxCheckpointSize bounds the size a trainer may report for one checkpoint (1 TiB).
	MaxCheckpointSize = 1 << 40
)

// ServerOptions are the gRPC server options of the coordinator service (message size limits).
// Append them after tlsauth's.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.MaxSendMsgSize(MaxResponseBytes)}
}

// callOptions are the dial options of every connection to a replica (message size limits).
func callOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes),
		grpc.MaxCallSendMsgSize(MaxRequestBytes))}
}

// badRequest is the refusal of a malformed request: codes.InvalidArgument carrying fsm's
// "bad_command" code, so a Client sees fsm.ErrBadCommand naming the field.
func badRequest(format string, args ...any) error {
	return resultStatus(fsm.Result{Code: "bad_command", Message: fmt.Sprintf(format, args...)})
}

// checkToken checks an id-like string: printable ASCII without spaces, at most max bytes, and
// non-empty unless optional.
func checkToken(field, s string, max int, optional bool) error {
	if s == "" {
		if optional {
			return nil
		}
		return badRequest("%s is empty", field)
	}
	if len(s) > max {
		return badRequest("%s is %d bytes, at most %d allowed", field, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return badRequest("%s %q: byte %d is not printable ASCII", field, s, i)
		}
	}
	return nil
}

// checkAddress checks a host:port a peer will dial: non-empty host, numeric port 1..65535.
func checkAddress(field, s string) error {
	if err := checkToken(field, s, MaxAddressLen, false); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return badRequest("%s %q is not host:port", field, s)
	}
	p, err := strconv.Atoi(port)
	if host == "" || err != nil || p < 1 || p > math.MaxUint16 {
		return badRequest("%s %q: want a host and a port in 1..65535", field, s)
	}
	return nil
}

// checkSHA256 checks a lowercase hex SHA-256 digest.
func checkSHA256(field, s string) error {
	if len(s) != 64 {
		return badRequest("%s is %d characters, want 64 hex digits", field, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return badRequest("%s %q is not lowercase hex", field, s)
		}
	}
	return nil
}

func checkStep(field string, step int64) error {
	if step < 0 {
		return badRequest("%s is %d, must not be negative", field, step)
	}
	return nil
}

func validateSubmit(r *api.SubmitRunRequest) error {
	if err := checkToken("request_id", r.RequestId, MaxIDLen, true); err != nil {
		return err
	}
	if len(r.RunYaml) > MaxRunYAML {
		return badRequest("run_yaml is %d bytes, at most %d allowed", len(r.RunYaml), MaxRunYAML)
	}
	return nil
}

func validateJoin(r *api.JoinRequest) error {
	for _, err := range []error{
		checkToken("request_id", r.RequestId, MaxIDLen, true),
		checkToken("id", r.Id, MaxIDLen, false),
		checkAddress("address", r.Address),
		checkToken("version", r.Version, MaxVersionLen, false),
		checkToken("process_nonce", r.ProcessNonce, MaxIDLen, true),
	} {
		if err != nil {
			return err
		}
	}
	if r.ConfigHash != "" {
		if err := checkSHA256("config_hash", r.ConfigHash); err != nil {
			return err
		}
	}
	if len(r.Held) > MaxHeld {
		return badRequest("held lists %d checkpoints, at most %d allowed", len(r.Held), MaxHeld)
	}
	for i, h := range r.Held {
		if h == nil {
			return badRequest("held[%d] is empty", i)
		}
		if err := checkStep(fmt.Sprintf("held[%d].step", i), h.Step); err != nil {
			return err
		}
		if err := checkSHA256(fmt.Sprintf("held[%d].sha256", i), h.Sha256); err != nil {
			return err
		}
	}
	return nil
}

func validateHeartbeat(r *api.HeartbeatRequest) error {
	if err := checkToken("request_id", r.RequestId, MaxIDLen, true); err != nil {
		return err
	}
	return checkToken("id", r.Id, MaxIDLen, false)
}

func validateLeave(r *api.LeaveRequest) error {
	if err := checkToken("request_id", r.RequestId, MaxIDLen, true); err != nil {
		return err
	}
	return checkToken("id", r.Id, MaxIDLen, false)
}

func validateProgress(r *api.ReportProgressRequest) error {
	for _, err := range []error{
		checkToken("request_id", r.RequestId, MaxIDLen, true),
		checkToken("id", r.Id, MaxIDLen, false),
		checkStep("step", r.Step),
	} {
		if err != nil {
			return err
		}
	}
	if n := len(r.LossQuartiles); n != 0 && n != 4 {
		return badRequest("loss_quartiles has %d values, want 4 or none", n)
	}
	if len(r.Failure) > MaxFailureLen {
		return badRequest("failure is %d bytes, at most %d allowed", len(r.Failure), MaxFailureLen)
	}
	if field, v := NonFiniteField(r); field != "" {
		return badRequest("%s is %v, want a finite number", field, v)
	}
	return nil
}

// NonFiniteField names the first metric of r that is a NaN or an infinity ("loss",
// "loss_quartiles[1]", ...) with its value, or "" when all are finite. ReportProgress refuses
// such a report: the raft log's encoding (JSON) has no such numbers, and the leader would fail
// to encode the command while the sender retried it. The loss, loss_quartiles and grad_norm of
// a report with skipped set (a step skipped for a non-finite gradient) are not recorded, so not
// checked: a trainer sends such a step with skipped set and checks its reports with this.
func NonFiniteField(r *api.ReportProgressRequest) (field string, v float64) {
	for _, f := range []struct {
		name string
		v    float64
	}{{"loss", r.Loss}, {"grad_norm", r.GradNorm}, {"lr", r.Lr}, {"images_per_sec", r.ImagesPerSec},
		{"compute_sec", r.ComputeSec}, {"allreduce_sec", r.AllreduceSec}, {"wait_sec", r.WaitSec}, {"busbw", r.Busbw}} {
		if r.Skipped && (f.name == "loss" || f.name == "grad_norm") {
			continue
		}
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return f.name, f.v
		}
	}
	if r.Skipped {
		return "", 0
	}
	for i, q := range r.LossQuartiles {
		if math.IsNaN(q) || math.IsInf(q, 0) {
			return fmt.Sprintf("loss_quartiles[%d]", i), q
		}
	}
	return "", 0
}

func validateCheckpoint(r *api.CheckpointReadyRequest) error {
	for _, err := range []error{
		checkToken("request_id", r.RequestId, MaxIDLen, true),
		checkToken("id", r.Id, MaxIDLen, false),
		checkStep("step", r.Step),
		checkSHA256("sha256", r.Sha256),
	} {
		if err != nil {
			return err
		}
	}
	if r.Size <= 0 || r.Size > MaxCheckpointSize {
		return badRequest("size is %d bytes, want 1..%d", r.Size, int64(MaxCheckpointSize))
	}
	return nil
}
