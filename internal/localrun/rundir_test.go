package localrun

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// local.json labels every port; a manifest of the older unlabelled form ([raft, grpc, http],
// [listen, http]) still reads, to the same ports, so that --resume of an older run works.
func TestManifestPortsLabelledAndOldFormRead(t *testing.T) {
	dir := t.TempDir()
	m := Manifest{ConfigHash: "abc", Coordinators: 1, Trainers: 1,
		CoordinatorPorts: []CoordinatorPorts{{Raft: 4001, GRPC: 4002, HTTP: 4003}}, TrainerPorts: []TrainerPorts{{Listen: 4004, HTTP: 4005}}}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"raft": 4001`, `"grpc": 4002`, `"http": 4003`, `"listen": 4004`, `"http": 4005`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("local.json lacks %s:\n%s", want, b)
		}
	}
	old := `{"config_hash": "abc", "coordinators": 1, "trainers": 1, "coordinator_ports": [[4001, 4002, 4003]], "trainer_ports": [[4004, 4005]]}`
	for _, text := range []string{string(b), old} {
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.CoordinatorPorts, m.CoordinatorPorts) || !slices.Equal(got.TrainerPorts, m.TrainerPorts) {
			t.Fatalf("read %+v %+v from\n%s", got.CoordinatorPorts, got.TrainerPorts, text)
		}
		if g := got.CoordinatorGRPC(); !slices.Equal(g, []string{"127.0.0.1:4002"}) {
			t.Fatalf("CoordinatorGRPC = %q", g)
		}
	}
}
