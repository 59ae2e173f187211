package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

// otherFile is the one line for a text file that is not a run config but another file of a run
// folder (ddpm local's) or trainer volume, nil for any other. Such a file, given as --config,
// was a YAML complaint about its first key ("unknown field config_hash") or its shape ("the
// document is a string"); the line names what the file is and what to give instead, and, when a
// run.yaml lies beside it, that file:
//
//	runs/a/local.json is ddpm local's run record, not a run config; to continue that run: ddpm local --resume runs/a (its run config is runs/a/run.yaml)
//	runs/a/loss.csv is a run's loss history (CSV; ddpm loss reads it), not a run config; the run config beside it is runs/a/run.yaml
//
// Recognized: local.json (config_hash and ports), a trainer's fault.json (kind, config, err), a
// loss history (header step,loss,lr,grad_norm), a prepared dataset's index.json, a PEM
// certificate or key, and a ddpm log (log/slog lines, text or JSON). The error is ErrLoad
// under errors.Is.
func otherFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	beside := ""
	if yaml := filepath.Join(dir, "run.yaml"); filepath.Clean(path) != yaml {
		if isRegular(yaml) {
			beside = yaml
		}
	}
	text := bytes.TrimSpace(data)
	firstLine, _, _ := bytes.Cut(text, []byte("\n"))
	firstLine = bytes.TrimSpace(firstLine)
	var obj map[string]json.RawMessage
	isJSON := len(text) > 0 && text[0] == '{' && json.Unmarshal(text, &obj) == nil
	has := func(keys ...string) bool {
		for _, k := range keys {
			if _, ok := obj[k]; !ok {
				return false
			}
		}
		return true
	}
	var what, advice string
	switch {
	case isJSON && has("config_hash") && (has("trainer_ports") || has("coordinator_ports")):
		what = "ddpm local's run record"
		advice = "to continue that run: ddpm local --resume " + quoteWord(dir)
		if beside != "" {
			advice += " (its run config is " + beside + ")"
		}
		beside = ""
	case isJSON && has("kind", "config", "err"):
		what = "a trainer's fault record"
	case isJSON && bytes.Contains(text, []byte(`"ddpm-prepared"`)):
		what = "a prepared dataset's index"
		advice = "give its folder to --data"
	case string(firstLine) == "step,loss,lr,grad_norm":
		what = "a run's loss history (CSV; ddpm loss reads it)"
	case bytes.HasPrefix(text, []byte("-----BEGIN ")):
		what = "a PEM certificate or key (a --certs folder's)"
	case bytes.HasPrefix(firstLine, []byte("time=")) && bytes.Contains(firstLine, []byte(" level=")),
		isLogRecord(firstLine):
		what = "a ddpm log"
	default:
		return nil
	}
	line := path + " is " + what + ", not a run config"
	if advice != "" {
		line += "; " + advice
	}
	if beside != "" {
		line += "; the run config beside it is " + beside
	}
	return loadError(line)
}

// isRegular reports whether path is a regular file (following links).
func isRegular(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// isLogRecord reports whether line is a JSON log record of log/slog (time, level and msg keys).
func isLogRecord(line []byte) bool {
	var rec map[string]json.RawMessage
	if json.Unmarshal(line, &rec) != nil {
		return false
	}
	_, t := rec["time"]
	_, l := rec["level"]
	_, m := rec["msg"]
	return t && l && m
}

// quoteWord is s as one shell word: as it is when it holds only characters no shell treats
// specially, else in single quotes.
func quoteWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=+,@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
