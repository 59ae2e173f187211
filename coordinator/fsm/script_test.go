package fsm

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ddpm/config"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt scenarios")

// TestScenarios runs the readable scripts in testdata/. Each block is a command line, a "----"
// line and the expected output; blocks are separated by blank lines; "#" starts a comment.
// `go test ./coordinator/fsm -run Scenarios -rewrite` regenerates the expected output — review
// the diff before committing it.
func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata/")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) { runScript(t, file) })
	}
}

type block struct {
	comments []string
	cmd      string
	want     string
	line     int
}

func parseScript(t *testing.T, file string) []block {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	var cur *block
	inWant := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case inWant && line == "":
			blocks, cur, inWant = append(blocks, *cur), nil, false
		case inWant:
			cur.want += line + "\n"
		case strings.HasPrefix(line, "#") || line == "":
			if cur == nil {
				cur = &block{}
			}
			cur.comments = append(cur.comments, line)
		case line == "----":
			if cur == nil || cur.cmd == "" {
				t.Fatalf("%s:%d: ---- without a command", file, n)
			}
			inWant = true
		default:
			if cur == nil {
				cur = &block{}
			}
			if cur.cmd != "" {
				t.Fatalf("%s:%d: two commands without ---- between them", file, n)
			}
			cur.cmd, cur.line = line, n
		}
	}
	if cur != nil && cur.cmd != "" {
		blocks = append(blocks, *cur)
	}
	return blocks
}

func runScript(t *testing.T, file string) {
	blocks := parseScript(t, file)
	s := New()
	var out bytes.Buffer
	for _, b := range blocks {
		got := execLine(t, s, b.cmd)
		if !*rewrite && got != b.want {
			t.Errorf("%s:%d: %s\ngot:\n%swant:\n%s", file, b.line, b.cmd, got, b.want)
		}
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		out.WriteString(b.cmd + "\n----\n" + got + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(file, bytes.TrimRight(out.Bytes(), "\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Keep a trailing newline.
		f, _ := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString("\n")
		f.Close()
	}
}

// execLine runs one script command and renders the result and the state it left.
func execLine(t *testing.T, s *State, line string) string {
	fields := strings.Fields(line)
	verb, args := fields[0], map[string]string{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("argument %q is not key=value", f)
		}
		args[k] = v
	}
	str := func(k string) string { return args[k] }
	i64 := func(k string) int64 {
		if args[k] == "" {
			return 0
		}
		v, err := strconv.ParseInt(args[k], 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", k, args[k], err)
		}
		return v
	}
	f64 := func(k string) float64 {
		if args[k] == "" {
			return 0
		}
		v, err := strconv.ParseFloat(args[k], 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", k, args[k], err)
		}
		return v
	}
	var now int64
	if args["t"] != "" {
		d, err := time.ParseDuration(args["t"])
		if err != nil {
			t.Fatalf("t=%q: %v", args["t"], err)
		}
		now = int64(d)
	}
	cmd := Command{RequestID: str("rid"), Time: now}
	switch verb {
	case "submit":
		run, err := config.Preset(str("preset"))
		if err != nil {
			t.Fatal(err)
		}
		set := map[string]func(string){
			"steps":   func(v string) { run.Steps, _ = strconv.ParseInt(v, 10, 64) },
			"every":   func(v string) { run.CheckpointEvery, _ = strconv.ParseInt(v, 10, 64) },
			"keep":    func(v string) { run.KeepCheckpoints, _ = strconv.Atoi(v) },
			"min":     func(v string) { run.MinTrainers, _ = strconv.Atoi(v) },
			"max":     func(v string) { run.MaxTrainers, _ = strconv.Atoi(v) },
			"batch":   func(v string) { run.GlobalBatch, _ = strconv.Atoi(v) },
			"lr":      func(v string) { run.LR, _ = strconv.ParseFloat(v, 64) },
			"dataset": func(v string) { run.Dataset = strings.Trim(v, `"`) },
			"timeout": func(v string) { d, _ := time.ParseDuration(v); run.HeartbeatTimeout = config.Duration(d) },
			"seed":    func(v string) { run.Seed, _ = strconv.ParseUint(v, 10, 64) },
		}
		for k, v := range args {
			if fn, ok := set[k]; ok {
				fn(v)
			}
		}
		cmd.Kind, cmd.Submit = KindSubmit, &Submit{Run: run}
	case "join":
		hash := str("hash")
		if hash == "run" {
			hash = s.ConfigHash
		}
		j := &Join{ID: str("id"), Address: str("addr"), Version: "v1", ConfigHash: hash, Nonce: str("nonce")}
		if j.Address == "" {
			j.Address = str("id") + ":7000"
		}
		// held=STEP:TAG[,STEP:TAG...]: the committed checkpoints on the trainer's volume.
		for h := range strings.SplitSeq(str("held"), ",") {
			if h == "" {
				continue
			}
			step, sha, _ := strings.Cut(h, ":")
			n, _ := strconv.ParseInt(step, 10, 64)
			j.Held = append(j.Held, Held{Step: n, SHA256: sha64(sha)})
		}
		cmd.Kind, cmd.Join = KindJoin, j
	case "heartbeat":
		cmd.Kind, cmd.Heartbeat = KindHeartbeat, &Heartbeat{ID: str("id"), Incarnation: uint64(i64("inc"))}
	case "leave":
		cmd.Kind, cmd.Leave = KindLeave, &Leave{ID: str("id"), Incarnation: uint64(i64("inc"))}
	case "expire":
		cmd.Kind = KindExpire
	case "progress":
		cmd.Kind, cmd.Progress = KindProgress, &Progress{ID: str("id"), Incarnation: uint64(i64("inc")), Generation: uint64(i64("gen")), Step: i64("step"),
			Point: LossPoint{Loss: f64("loss")}, Failure: strings.ReplaceAll(str("failure"), "_", " ")}
	case "ckpt":
		cmd.Kind, cmd.Checkpoint = KindCheckpoint, &CheckpointReport{ID: str("id"), Incarnation: uint64(i64("inc")), Generation: uint64(i64("gen")),
			Step: i64("step"), SHA256: sha64(str("sha")), Size: i64("size")}
	case "rollback":
		cmd.Kind, cmd.Rollback = KindRollback, &Rollback{ToStep: i64("to")}
	case "snapshot":
		// Snapshot and restore must give the same state, byte for byte.
		c, err := Decode(s.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Encode(), s.Encode()) {
			return "restored state differs\n"
		}
		return fmt.Sprintf("restored %d bytes, equal\n", len(s.Encode()))
	case "events":
		var b strings.Builder
		n := int(i64("last"))
		evs := s.Events[max(0, len(s.Events)-n):]
		for _, e := range evs {
			fmt.Fprintf(&b, "%s %s: %s\n", time.Duration(e.Time), e.Kind, e.Text)
		}
		return b.String()
	case "incarnations":
		// Each member's current incarnation and address, by id.
		var b strings.Builder
		ids := make([]string, 0, len(s.Members))
		for id := range s.Members {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			m := s.Members[id]
			fmt.Fprintf(&b, "%s incarnation %d at %s", id, m.Incarnation, m.Address)
			if m.Nonce != "" {
				fmt.Fprintf(&b, " process %s", m.Nonce)
			}
			b.WriteString("\n")
		}
		return b.String()
	case "loss":
		var b strings.Builder
		for _, p := range s.Loss.Points {
			fmt.Fprintf(&b, "step %d loss %g\n", p.Step, p.Loss)
		}
		return b.String()
	default:
		t.Fatalf("unknown script command %q", verb)
	}
	r := Apply(s, cmd)
	return renderResult(r) + render(s)
}

// sha64 expands a short tag such as "aa" to a 64-character hex string.
func sha64(tag string) string {
	if tag == "" {
		return ""
	}
	return strings.Repeat(tag, 64/len(tag)+1)[:64]
}

func renderResult(r Result) string {
	if err := r.Err(); err != nil {
		if r.Code == "stale_incarnation" && r.Nonce != "" {
			return fmt.Sprintf("error: %v [current: incarnation %d at %s, process %s]\n", err, r.Incarnation, r.Address, r.Nonce)
		}
		if r.Code == "stale_incarnation" {
			return fmt.Sprintf("error: %v [current: incarnation %d at %s]\n", err, r.Incarnation, r.Address)
		}
		return "error: " + err.Error() + "\n"
	}
	return "ok\n"
}

func render(s *State) string {
	var b strings.Builder
	g := s.Generation
	fmt.Fprintf(&b, "status=%s step=%d/%d gen=%d world=%d ring=[%s] start=%d", orDash(string(s.Status)), s.Step, s.TotalSteps,
		g.Number, g.World, strings.Join(g.Ring, " "), g.StartStep)
	if g.Checkpoint != nil {
		fmt.Fprintf(&b, " load=%d(%s)", g.Checkpoint.Step, strings.Join(g.Checkpoint.Holders, ","))
	}
	b.WriteString("\n")
	ids := make([]string, 0, len(s.Members))
	for id := range s.Members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var ms []string
	for _, id := range ids {
		ms = append(ms, id+"="+string(s.Members[id].State))
	}
	fmt.Fprintf(&b, "members: %s\n", orDash(strings.Join(ms, " ")))
	if len(s.Checkpoints) > 0 {
		var cs []string
		for _, c := range s.Checkpoints {
			cs = append(cs, fmt.Sprintf("%d:%.2s(%s)", c.Step, c.SHA256, strings.Join(c.Holders, ",")))
		}
		fmt.Fprintf(&b, "checkpoints: %s\n", strings.Join(cs, " "))
	}
	if len(s.Abandoned) > 0 {
		var as []string
		for _, a := range s.Abandoned {
			as = append(as, fmt.Sprintf("%d:%.2s(%s)->%d", a.Step, a.SHA256, strings.Join(a.Holders, ","), a.RolledBackTo))
		}
		fmt.Fprintf(&b, "abandoned: %s\n", strings.Join(as, " "))
	}
	if s.Reason != "" {
		fmt.Fprintf(&b, "reason: %s\n", s.Reason)
	}
	return b.String()
}
