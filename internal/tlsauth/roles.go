package tlsauth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Role is what a certificate's holder may do in a cluster. A certificate carries at most one
// role, as a URI subject alternative name "ddpm:role/NAME" (RoleURIPrefix + the role; `openssl
// x509 -noout -ext subjectAltName -in node.crt` shows it). A certificate without one (every
// certificate Init makes, so every certificate directory older than roles) has RoleNone and may
// do everything, as before roles existed. Make a role certificate with Issue (`ddpm certs
// issue`).
//
// What each role may do, checked by the servers (ServerOptions, RaftStreamLayer):
//
//   - RoleCoordinator: the raft links between coordinator replicas, and every method of the
//     Coordinator service (a follower forwards trainers' and operators' writes to the leader
//     under its own certificate, and a replica submits its --run);
//   - RoleTrainer: the trainer calls of the Coordinator service (Join, Heartbeat, Leave,
//     WatchAssignment, ReportProgress, CheckpointReady, Status), the all-reduce ring between
//     trainers (Ring.Stream) and checkpoint transfer from a peer (CheckpointTransfer.Fetch); no
//     raft, no SubmitRun, no RollbackRun;
//   - RoleOperator: what `ddpm status`, `ddpm loss`, `ddpm checkpoint rollback` and `ddpm
//     checkpoint fetch` call (Coordinator.Status, Coordinator.RollbackRun,
//     CheckpointTransfer.Fetch); no raft, no trainer calls.
//
// MethodRoles is the table; a method missing from it is open to RoleNone only. Clients check the
// other direction (DialOptions): a call goes only to a server whose certificate has no role or
// the role that serves the method (ServerRole: coordinator for the Coordinator service, trainer
// for the ring and checkpoint transfer), and raft links check both ends.
//
// A role is not an identity: every trainer certificate is the same to the servers, so a holder
// of one may call Heartbeat, Leave or ReportProgress naming any trainer id.
type Role string

// The roles. RoleNone is the empty string.
const (
	RoleNone        Role = ""
	RoleCoordinator Role = "coordinator"
	RoleTrainer     Role = "trainer"
	RoleOperator    Role = "operator"
)

// RoleURIPrefix starts the URI subject alternative name that carries a certificate's role.
const RoleURIPrefix = "ddpm:role/"

// Roles lists the roles Issue makes, in the order the messages name them.
var Roles = []Role{RoleCoordinator, RoleTrainer, RoleOperator}

// ErrRole: a peer's certificate carries a role that may not make this link or call (raft), or
// a certificate carries an unknown role or several.
var ErrRole = errors.New("tlsauth: certificate role refused")

// MethodRoles maps the full gRPC method names of the services in api/*.proto to the roles that
// may call them. A certificate without a role may call every method, listed or not.
var MethodRoles = map[string][]Role{
	// The Coordinator service (api/coordinator.proto).
	"/ddpm.coordinator.v1.Coordinator/SubmitRun":       {RoleCoordinator},
	"/ddpm.coordinator.v1.Coordinator/Join":            {RoleCoordinator, RoleTrainer},
	"/ddpm.coordinator.v1.Coordinator/Heartbeat":       {RoleCoordinator, RoleTrainer},
	"/ddpm.coordinator.v1.Coordinator/Leave":           {RoleCoordinator, RoleTrainer},
	"/ddpm.coordinator.v1.Coordinator/WatchAssignment": {RoleCoordinator, RoleTrainer},
	"/ddpm.coordinator.v1.Coordinator/ReportProgress":  {RoleCoordinator, RoleTrainer},
	"/ddpm.coordinator.v1.Coordinator/CheckpointReady": {RoleCoordinator, RoleTrainer},
	"/ddpm.coordinator.v1.Coordinator/Status":          {RoleCoordinator, RoleTrainer, RoleOperator},
	"/ddpm.coordinator.v1.Coordinator/RollbackRun":     {RoleCoordinator, RoleOperator},
	// The all-reduce ring between trainers (api/allreduce.proto).
	"/ddpm.allreduce.v1.Ring/Stream": {RoleTrainer},
	// Checkpoint transfer, served by trainers (api/checkpoint.proto).
	"/ddpm.checkpoint.v1.CheckpointTransfer/Fetch": {RoleTrainer, RoleOperator},
}

// serviceServers maps the method prefix of each service in api/*.proto to the role of the
// processes that serve it.
var serviceServers = map[string]Role{
	"/ddpm.coordinator.v1.Coordinator/":       RoleCoordinator,
	"/ddpm.allreduce.v1.Ring/":                RoleTrainer,
	"/ddpm.checkpoint.v1.CheckpointTransfer/": RoleTrainer,
}

// ServerRole returns the role of the processes that serve the full gRPC method name method:
// coordinator for the Coordinator service, trainer for the ring and checkpoint transfer; ok is
// false for a method of no ddpm service. A client sends a call only to a server whose
// certificate has that role or none (DialOptions).
func ServerRole(method string) (r Role, ok bool) {
	for prefix, r := range serviceServers {
		if strings.HasPrefix(method, prefix) {
			return r, true
		}
	}
	return RoleNone, false
}

// ParseRole returns the role named s (coordinator, trainer or operator); anything else, the
// empty string included, is an error naming the roles.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(Roles, r) {
		return r, nil
	}
	return RoleNone, fmt.Errorf("%w: role %q: want %s", ErrBadOption, s, roleList(Roles, " or "))
}

// String is the role's name, "no role" for RoleNone.
func (r Role) String() string {
	if r == RoleNone {
		return "no role"
	}
	return string(r)
}

// MayCall reports whether a holder of role r may call the full gRPC method name method.
func (r Role) MayCall(method string) bool {
	return r == RoleNone || slices.Contains(MethodRoles[method], r)
}

// MayRaft reports whether a holder of role r may make a raft link (coordinators and
// certificates without a role).
func (r Role) MayRaft() bool { return r == RoleNone || r == RoleCoordinator }

// RoleOf returns the role cert carries: RoleNone without a "ddpm:role/" URI, the role with one
// naming a known role, and an error wrapping ErrRole for several such URIs or an unknown role
// (a certificate of a newer release, or a made-up one: it gets no rights here).
func RoleOf(cert *x509.Certificate) (Role, error) {
	var found []string
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, RoleURIPrefix) {
			found = append(found, strings.TrimPrefix(s, RoleURIPrefix))
		}
	}
	switch {
	case len(found) == 0:
		return RoleNone, nil
	case len(found) > 1:
		return RoleNone, fmt.Errorf("%w: the certificate carries %d roles (%s), want at most one", ErrRole, len(found), strings.Join(found, ", "))
	}
	if r := Role(found[0]); slices.Contains(Roles, r) {
		return r, nil
	}
	return RoleNone, fmt.Errorf("%w: the certificate carries the unknown role %q (want %s)", ErrRole, found[0], roleList(Roles, " or "))
}

// roleList names roles in one phrase: "coordinator, trainer or operator" (sep " or ") or
// "coordinator, operator" (sep ", ").
func roleList(roles []Role, sep string) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + sep + names[len(names)-1]
}

// msgServerRefused is the codes.PermissionDenied message of a call a client did not send because
// the server's certificate has role r and method is served by role want, e.g. "ddpm: this
// process refused the server: its certificate has role operator, and
// /ddpm.coordinator.v1.Coordinator/Status is served by role coordinator".
func msgServerRefused(r, want Role, method string) string {
	return fmt.Sprintf("%sits certificate has role %s, and %s is served by role %s", serverRefusedPrefix, r, method, want)
}

// serverRefusedPrefix starts every message of a call a client did not send for the server's role.
const serverRefusedPrefix = "ddpm: this process refused the server: "

// ServerRefusal returns why a call was not sent when err is the codes.PermissionDenied of a
// client that refused the server's role (DialOptions), e.g. "its certificate has role operator,
// and /ddpm.coordinator.v1.Coordinator/Status is served by role coordinator", and "" for any other
// error (a server's refusal of the caller's role included). err may be wrapped.
func ServerRefusal(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return ""
	}
	st := se.GRPCStatus()
	if st.Code() != codes.PermissionDenied {
		return ""
	}
	why, ok := strings.CutPrefix(st.Message(), serverRefusedPrefix)
	if !ok {
		return ""
	}
	return why
}

// msgRoleRefused is the codes.PermissionDenied message of a call the caller's role may not make,
// seen verbatim by the client, e.g. "ddpm: role trainer may not call
// /ddpm.coordinator.v1.Coordinator/RollbackRun (roles allowed: coordinator, operator)".
func msgRoleRefused(r Role, method string) string {
	allowed := MethodRoles[method]
	if len(allowed) == 0 {
		return fmt.Sprintf("ddpm: role %s may not call %s (only certificates without a role may)", r, method)
	}
	return fmt.Sprintf("ddpm: role %s may not call %s (roles allowed: %s)", r, method, roleList(allowed, ", "))
}
