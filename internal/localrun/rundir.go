package localrun

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"ddpm/internal/atomicfile"
	"ddpm/internal/flockholder"
)

// The run directory of `ddpm local`:
//
//	OUT/
//	  run.yaml            the run config (its hash identifies the run)
//	  local.json          Manifest: config hash, process counts, the loopback ports in use
//	  local.lock          flock(2)ed by the supervising process while the run is up (Lock); it
//	                      holds that process's pid
//	  certs/              the run's CA, node certificate and join secret (mutual TLS between
//	                      every process, as on a real cluster)
//	  coordinator-I/      raft data of coordinator I (log, stable store, snapshots)
//	  trainer-I/          trainer I's volume (checkpoints.db)
//	  logs/NAME.log       every child's output; logs/NAME.pid its pid while it runs (gone while it is down)
//	  loss.csv loss.png   the global training loss per step
//	  samples.png         samples of the EMA weights (Algorithm 2) at the end
const (
	ConfigFile   = "run.yaml"
	ManifestFile = "local.json"
	LockFile     = "local.lock"
	LogsDir      = "logs"
	CertsDir     = "certs"
	LossCSV      = "loss.csv"
	LossPNG      = "loss.png"
	SamplesPNG   = "samples.png"
)

// Errors about run directories.
var (
	// ErrOtherRun: the output folder already holds something that is not this run.
	ErrOtherRun = errors.New("holds a different run")
	// ErrNotARun: --resume of a folder that holds no run.
	ErrNotARun = errors.New("holds no ddpm local run")
	// ErrPortBusy: a port recorded in the manifest stayed taken while ClaimPorts waited (by
	// this run's own process, a closed connection, or something /proc does not show).
	ErrPortBusy = errors.New("port is in use")
	// ErrPortHeld: another program holds a port recorded in the manifest (ClaimPorts).
	ErrPortHeld = errors.New("port is held by another program")
	// ErrRunning: another live process holds the run directory's lock (Lock).
	ErrRunning = errors.New("is already running")
)

// Manifest is local.json: what `ddpm local --resume` needs to bring the same cluster back.
type Manifest struct {
	ConfigHash   string `json:"config_hash"`
	Coordinators int    `json:"coordinators"`
	Trainers     int    `json:"trainers"`
	// The loopback ports of each coordinator and trainer. Raft keeps its peers' addresses in
	// its log, so a resumed cluster must listen where it did before.
	CoordinatorPorts []CoordinatorPorts `json:"coordinator_ports"`
	TrainerPorts     []TrainerPorts     `json:"trainer_ports"`
	// Init is the safetensors file the trainers' step-0 weights come from ("" for the seed's
	// initialization); a resumed run keeps it.
	Init string `json:"init,omitempty"`
	// Samples is the size of the samples.png grid the run makes at its end (0: none); a resumed
	// run keeps it unless told otherwise. nil in manifests written before it was recorded.
	Samples *int `json:"samples,omitempty"`
	// HTTPTLS is ddpm local --http-tls: the coordinators and trainers serve their --http-addr
	// (the dashboard, /api/*, /metrics) over HTTPS with the run's certificates (CertsDir); a
	// resumed run keeps the choice of its first start. false in manifests written before it was
	// recorded (those runs served plain HTTP).
	HTTPTLS bool `json:"http_tls,omitempty"`
}

// CoordinatorPorts are one coordinator's ports: raft's transport, the gRPC API that trainers
// and `ddpm status --coordinator` dial, and HTTP (the dashboard, /healthz, /metrics). In
// local.json {"raft": R, "grpc": G, "http": H}; the unlabelled [R, G, H] of manifests written
// before is read too.
type CoordinatorPorts struct {
	Raft int `json:"raft"`
	GRPC int `json:"grpc"`
	HTTP int `json:"http"`
}

// TrainerPorts are one trainer's ports: gRPC (--listen: the all-reduce ring and checkpoint
// transfer) and HTTP (/metrics, /healthz, /readyz). In local.json {"listen": L, "http": H};
// the unlabelled [L, H] of manifests written before is read too.
type TrainerPorts struct {
	Listen int `json:"listen"`
	HTTP   int `json:"http"`
}

// UnmarshalJSON reads the labelled object or the older [raft, grpc, http] array.
func (p *CoordinatorPorts) UnmarshalJSON(b []byte) error {
	var a [3]int
	if json.Unmarshal(b, &a) == nil {
		*p = CoordinatorPorts{Raft: a[0], GRPC: a[1], HTTP: a[2]}
		return nil
	}
	type plain CoordinatorPorts
	return json.Unmarshal(b, (*plain)(p))
}

// UnmarshalJSON reads the labelled object or the older [listen, http] array.
func (p *TrainerPorts) UnmarshalJSON(b []byte) error {
	var a [2]int
	if json.Unmarshal(b, &a) == nil {
		*p = TrainerPorts{Listen: a[0], HTTP: a[1]}
		return nil
	}
	type plain TrainerPorts
	return json.Unmarshal(b, (*plain)(p))
}

// CoordinatorDir, TrainerDir name the per-process data folders inside the run directory.
func CoordinatorDir(out string, i int) string {
	return filepath.Join(out, "coordinator-"+strconv.Itoa(i))
}
func TrainerDir(out string, i int) string { return filepath.Join(out, "trainer-"+strconv.Itoa(i)) }

// TrainerCheckpointFiles lists the trainers' checkpoint files (trainer.CheckpointFile,
// checkpoints.db) of the run folder out, in order of I: OUT/trainer-0/checkpoints.db if it
// exists, then OUT/trainer-I/checkpoints.db for I = 1, 2, ... up to the first trainer-I folder
// that does not exist (a folder without the file is passed over). A file a trainer moved aside
// (checkpoints.db.damaged-UTCTIME) is none of them. nil when there are none.
func TrainerCheckpointFiles(out string) []string {
	var files []string
	for i := 0; i == 0 || exists(TrainerDir(out, i)); i++ {
		if f := filepath.Join(TrainerDir(out, i), "checkpoints.db"); exists(f) {
			files = append(files, f)
		}
	}
	return files
}

// IsRunFolder reports whether dir is a ddpm local run folder: it holds local.json, or
// trainer-0/checkpoints.db (a run folder whose manifest was lost still has its first trainer's
// volume). Commands that take a folder of another kind (a trainer's volume, a coordinator's raft
// data, a dataset) refuse one, before they write anything; the run's own trainer-I and
// coordinator-I folders are not run folders.
func IsRunFolder(dir string) bool {
	return exists(filepath.Join(dir, ManifestFile)) || exists(filepath.Join(TrainerDir(dir, 0), "checkpoints.db"))
}

// Phrases of FolderKind.
const (
	KindRunFolder     = "a ddpm local run folder"
	KindTrainerFolder = "a trainer's folder (checkpoints.db)"
)

// FolderKind names dir when it is one of ddpm's own folders: KindRunFolder (IsRunFolder) or
// KindTrainerFolder (a trainer's volume: it holds checkpoints.db); "" for any other folder and
// for one that does not exist. dataset.Open, coordinator.CheckDataDir and the trainer's
// --data-dir check refuse a folder of the wrong kind in these words, so that the three
// refusals judge a folder by one rule.
func FolderKind(dir string) string {
	switch {
	case IsRunFolder(dir):
		return KindRunFolder
	case exists(filepath.Join(dir, "checkpoints.db")):
		return KindTrainerFolder
	}
	return ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// CheckFresh decides whether out may receive a new run whose config hashes to hash. A missing or
// empty folder is fine. A folder holding a run is refused: ErrOtherRun when its config differs
// (naming both hashes), and an error suggesting --resume when it is the same run. Any other
// non-empty folder is refused as ErrOtherRun too: nothing of the user's is ever overwritten.
func CheckFresh(out, hash string) error {
	ents, err := os.ReadDir(out)
	if errors.Is(err, os.ErrNotExist) || err == nil && len(ents) == 0 {
		return nil
	}
	if err != nil {
		return err
	}
	m, err := ReadManifest(out)
	if err != nil {
		return fmt.Errorf("output folder %s is not empty and %w (no %s); choose another --out", out, ErrOtherRun, ManifestFile)
	}
	if m.ConfigHash != hash {
		return fmt.Errorf("output folder %s %w (config %.12s, this run %.12s); choose another --out or --resume %s", out, ErrOtherRun, m.ConfigHash, hash, out)
	}
	return fmt.Errorf("output folder %s already holds this run (config %.12s); continue it with --resume %s or choose another --out", out, hash, out)
}

// ReadManifest reads OUT/local.json; a folder without one is ErrNotARun.
func ReadManifest(out string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(out, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("%s %w (no %s)", out, ErrNotARun, ManifestFile)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w: bad %s: %v", out, ErrNotARun, ManifestFile, err)
	}
	if m.Coordinators < 1 || m.Trainers < 1 || len(m.CoordinatorPorts) != m.Coordinators || len(m.TrainerPorts) != m.Trainers {
		return m, fmt.Errorf("%s: %w: %s lists %d coordinators and %d trainers with %d and %d port sets", out, ErrNotARun, ManifestFile, m.Coordinators, m.Trainers, len(m.CoordinatorPorts), len(m.TrainerPorts))
	}
	return m, nil
}

// WriteManifest writes OUT/local.json (creating OUT), mode 0644 less the umask, with atomicfile:
// synced and renamed into place, OUT synced after, so a crash leaves the old manifest or the new
// one, never an empty one (it was neither synced nor its temporary file removed on a failure).
// Errors: creating OUT's, or the file system's naming OUT/local.json.
func WriteManifest(out string, m Manifest) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(out, ManifestFile), 0o644, atomicfile.Replace, append(b, '\n'))
}

// NewManifest allocates free loopback ports for c coordinators and n trainers.
func NewManifest(hash string, c, n int) (Manifest, error) {
	ports, err := FreePorts(3*c + 2*n)
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{ConfigHash: hash, Coordinators: c, Trainers: n}
	for i := range c {
		m.CoordinatorPorts = append(m.CoordinatorPorts, CoordinatorPorts{Raft: ports[3*i], GRPC: ports[3*i+1], HTTP: ports[3*i+2]})
	}
	for i := range n {
		m.TrainerPorts = append(m.TrainerPorts, TrainerPorts{Listen: ports[3*c+2*i], HTTP: ports[3*c+2*i+1]})
	}
	return m, nil
}

// ClaimPorts waits until m's ports can be bound before the resumed run in out starts its
// processes, and says at once what holds a port that cannot be bound (FindPortHolder). The
// ports stay as recorded: a coordinator's are in the replicas' raft configuration and their
// peers' flags, and a trainer rejoining from another address within heartbeat_timeout of its
// last heartbeat is refused as a second process with its id.
//
// It waits, up to wait, for what goes away by itself: a process of this run (its --data-dir is
// one of out's coordinator-I or trainer-I folders) still stopping after its supervisor was
// killed (the kernel sent it SIGTERM); a closed connection in TIME_WAIT, which keeps its port
// up to 60 s and which no process holds (any process's outgoing connection may have been given
// a recorded port as its ephemeral local port while the run was stopped, and a bind fails on
// it even with SO_REUSEADDR); another process's open connection; and a connection whose process
// this user cannot look into (another user's). It does not wait for another process's listening
// socket, which stays until that process closes it, nor for one /proc/net/tcp{,6} lists as
// listening and owned by another user than this process's (its process hidden from this user:
// the run's own processes are this user's). say is called once for each port and holder it
// waits for, with what holds it.
//
// Errors: ErrPortHeld at once for another process's listening socket ("pid N (COMMAND)") or
// another user's ("a process of user NAME (uid N) that this user cannot look into"), and after
// wait for another process's connection or a connection that cannot be looked into; ErrPortBusy
// after wait for a port still held by this run's own process, or by something /proc does not
// show. Nothing is changed either way.
func (m Manifest) ClaimPorts(out string, wait time.Duration, say func(string)) error {
	type port struct {
		n     int
		owner string
	}
	var all []port
	for i, c := range m.CoordinatorPorts {
		o := fmt.Sprintf("coordinator-%d's", i)
		all = append(all, port{c.Raft, o}, port{c.GRPC, o}, port{c.HTTP, o})
	}
	for i, t := range m.TrainerPorts {
		o := fmt.Sprintf("trainer-%d's", i)
		all = append(all, port{t.Listen, o}, port{t.HTTP, o})
	}
	manifest := filepath.Join(out, ManifestFile)
	deadline := time.Now().Add(wait)
	waitFor := wait.Round(time.Second)
	said := map[string]bool{}
	for _, p := range all {
		for !portFree(p.n) {
			what := fmt.Sprintf("%s port 127.0.0.1:%d (recorded in %s)", p.owner, p.n, manifest)
			h, found := FindPortHolder(p.n)
			own := ""
			if found && h.PID > 0 {
				if own = RunProcess(out, h.PID); own == "" {
					if other := otherRunProcess(h.PID); other != "" {
						h.Command = other // its data folder says more than its first 80 characters
					}
				}
			}
			if !found && portFree(p.n) {
				break // it came free meanwhile
			}
			var (
				waiting string // what say is told while waiting
				failed  error  // the error once wait is over
				failNow error  // the error without waiting
			)
			switch {
			case !found:
				waiting = fmt.Sprintf("%s is in use; waiting up to %v for it (a closed connection holds its port for 60 s)", what, waitFor)
				failed = &portError{fmt.Sprintf("%s is in use after %v: stop what holds it, then resume again", what, waitFor), ErrPortBusy}
			case h.TimeWait:
				waiting = fmt.Sprintf("%s is held by %s; waiting for it", what, h.Describe())
				failed = &portError{fmt.Sprintf("%s is held by %s: resume again once it has ended", what, h.Describe()), ErrPortBusy}
			case own != "":
				waiting = fmt.Sprintf("%s is still held by this run's %s (pid %d), left from its last session; waiting up to %v for it to stop", what, own, h.PID, waitFor)
				failed = &portError{fmt.Sprintf("%s is still held by this run's %s (pid %d), left from its last session, after %v: stop it (kill %d), then resume again", what, own, h.PID, waitFor, h.PID), ErrPortBusy}
			case h.Listening && h.PID > 0:
				failNow = &portError{fmt.Sprintf("%s is held by %s, which is not this run's: stop it, then resume again", what, h.Describe()), ErrPortHeld}
			case otherUsersListener(h):
				// Its process is hidden from this user, but a listening socket does not go away by
				// waiting, and the run's own processes are this user's.
				failNow = &portError{fmt.Sprintf("%s is listened on by %s, which is not this run's (its processes run as this user, uid %d): have it stopped, then resume again",
					what, h.Describe(), geteuid()), ErrPortHeld}
			case h.PID > 0:
				waiting = fmt.Sprintf("%s is the local end of %s's connection to %s; waiting up to %v for it to close", what, h.Describe(), h.Remote, waitFor)
				failed = &portError{fmt.Sprintf("%s is still the local end of %s's connection to %s after %v: stop that process, then resume again", what, h.Describe(), h.Remote, waitFor), ErrPortHeld}
			default:
				waiting = fmt.Sprintf("%s is held by %s; waiting up to %v for it to let go", what, h.Describe(), waitFor)
				failed = &portError{fmt.Sprintf("%s is still held by %s after %v: have it stopped, then resume again", what, h.Describe(), waitFor), ErrPortHeld}
			}
			if failNow != nil {
				return failNow
			}
			if !time.Now().Before(deadline) {
				return failed
			}
			key := fmt.Sprintf("%d %v %d %v", p.n, h.TimeWait, h.PID, found)
			if !said[key] {
				say(waiting)
				said[key] = true
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return nil
}

// portError is an error of ClaimPorts: its line, and ErrPortBusy or ErrPortHeld.
type portError struct {
	msg  string
	kind error
}

func (e *portError) Error() string { return e.msg }

// geteuid is os.Geteuid (tests replace it).
var geteuid = os.Geteuid

// otherUsersListener reports whether h is a listening socket that /proc/net/tcp{,6} lists as
// owned by another user than this process's effective one, whose process this user cannot look
// into (PID 0): not the run's own, and not a thing that ends by itself as a connection or a
// TIME_WAIT does.
func otherUsersListener(h PortHolder) bool {
	return h.Listening && h.PID == 0 && h.UID >= 0 && h.UID != geteuid()
}
func (e *portError) Unwrap() error { return e.kind }

// RunProcess names the process pid when it is one of the run in out's own ("coordinator-0",
// "trainer-1"): its command line's --data-dir (resolved against its working directory) is that
// process's folder in out. "" for any other process, and when /proc/PID cannot be read.
func RunProcess(out string, pid int) string {
	dir := dataDirOf(pid)
	if dir == "" {
		return ""
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return ""
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "coordinator-") && !strings.HasPrefix(name, "trainer-") {
			continue
		}
		if fj, err := os.Stat(filepath.Join(out, name)); err == nil && os.SameFile(fi, fj) {
			return name
		}
	}
	return ""
}

// otherRunProcess words the process pid when it is a coordinator or trainer of some ddpm local
// run (its --data-dir is the coordinator-I or trainer-I folder of a run folder, IsRunFolder):
// "coordinator-0 of the ddpm local run /srv/runs/a" (a copy of a run folder resumed beside the
// original finds the original's processes on its ports); "" for any other process.
func otherRunProcess(pid int) string {
	dir := dataDirOf(pid)
	name := filepath.Base(dir)
	if dir == "" || !strings.HasPrefix(name, "coordinator-") && !strings.HasPrefix(name, "trainer-") || !IsRunFolder(filepath.Dir(dir)) {
		return ""
	}
	return name + " of the ddpm local run " + filepath.Dir(dir)
}

// dataDirOf is the --data-dir of process pid's command line, made absolute against its working
// directory; "" when it has none or /proc/PID cannot be read.
func dataDirOf(pid int) string {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	dir := ""
	for i, a := range args {
		if a == "--data-dir" && i+1 < len(args) {
			dir = args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			dir = v
		}
	}
	if dir == "" {
		return ""
	}
	if filepath.IsAbs(dir) {
		return filepath.Clean(dir)
	}
	cwd, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "cwd"))
	if err != nil {
		return ""
	}
	return filepath.Join(cwd, dir)
}

// portFree reports whether 127.0.0.1:p can be bound now.
func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// RunLock is the hold of one supervising process on a run directory (Lock).
type RunLock struct{ f *os.File }

// Lock claims the run directory out (which must exist) for this process until Release or the
// process's end: an exclusive flock(2) on OUT/local.lock, which then holds this process's pid.
// The kernel drops the lock when the process dies however it dies, so a lock file left by a
// killed run never blocks the next one. When another live process holds it, Lock returns
// ErrRunning naming that process ("OUT is already running (pid N)"). The file descriptor is
// close-on-exec: child processes do not inherit the hold.
func Lock(out string) (*RunLock, error) {
	p := filepath.Join(out, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		return nil, runningError(out, p)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", p, err)
	}
	return &RunLock{f: f}, nil
}

// runningError is ErrRunning for the run directory out whose lock file p another process
// holds, naming that process ("OUT is already running (pid N)").
func runningError(out, p string) error {
	pid := flockholder.PID(p)
	if pid == 0 { // no /proc/locks: the pid the holder wrote
		b, _ := os.ReadFile(p)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if pid > 0 {
		return fmt.Errorf("%s %w (pid %d)", out, ErrRunning, pid)
	}
	return fmt.Errorf("%s %w (%s is locked)", out, ErrRunning, p)
}

// Running reports whether a live process holds the run directory out (Lock), without taking it:
// ErrRunning naming that process, as Lock says it; nil when none does, or out holds no lock file.
// A new run refused for out says this first: advice to --resume a running run would only be
// refused in turn.
func Running(out string) error {
	p := filepath.Join(out, LockFile)
	if flockholder.PID(p) > 0 {
		return runningError(out, p)
	}
	// No holder in /proc/locks (or none to read): a non-blocking try, given up at once.
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
		return runningError(out, p)
	}
	return nil
}

// Release gives the run directory up (the file stays, unlocked).
func (l *RunLock) Release() error { return l.f.Close() }

// CoordinatorGRPC lists the coordinators' gRPC addresses, in order (what trainers and `ddpm
// status --coordinator` dial).
func (m Manifest) CoordinatorGRPC() []string {
	out := make([]string, len(m.CoordinatorPorts))
	for i, p := range m.CoordinatorPorts {
		out[i] = Addr(p.GRPC)
	}
	return out
}

// Addr formats a loopback address.
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
