package coordinator

import "ddpm/internal/tlsauth"

// MaxRaftPending bounds the raft connections a replica holds that have not yet authenticated;
// the bound lives in the raft stream layer (tlsauth.RaftLayer), where the authentication state
// is known.
const MaxRaftPending = tlsauth.MaxRaftPending

// MsgRaftPendingFull is the warning of a replica that closed raft connections because
// MaxRaftPending of them were awaiting authentication (on NodeConfig.Security's logger, at most
// one line per 30 s).
const MsgRaftPendingFull = tlsauth.MsgRaftPendingFull

// raftGuard is a replica's raft stream layer: mutual TLS plus the join secret, and at most
// MaxRaftPending connections awaiting them (Pending, Closed).
type raftGuard = tlsauth.RaftLayer
