package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func sample() []Tensor {
	return []Tensor{
		F32("down.0.conv.weight", []int{2, 1, 3, 3}, []float32{
			0.5, -1, 2, 3.25, math.MaxFloat32, -0, 1e-38, 7, 8,
			9, 10, 11, 12, 13, 14, 15, 16, float32(math.Inf(-1))}),
		F64("schedule.betas", []int{3}, []float64{1e-4, 0.01, math.Pi}),
		I64("t", []int{2}, []int64{0, math.MaxInt64}),
		I32("step", []int{}, []int32{-42}),
		F32("empty", []int{0, 4}, nil),
	}
}

func TestRoundTrip(t *testing.T) {
	ts := sample()
	meta := map[string]string{"format": "pt", "step": "1200"}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := Write(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	got, gotMeta, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	// Decode returns buffer order; Encode lays tensors out in the order given, so they agree.
	if len(got) != len(ts) {
		t.Fatalf("got %d tensors, want %d", len(got), len(ts))
	}
	for i := range ts {
		if got[i].Name != ts[i].Name || got[i].DType != ts[i].DType ||
			!reflect.DeepEqual(got[i].Shape, ts[i].Shape) || !bytes.Equal(got[i].Data, ts[i].Data) {
			t.Errorf("tensor %d: got %+v, want %+v", i, got[i], ts[i])
		}
	}
	if !reflect.DeepEqual(gotMeta, meta) {
		t.Errorf("metadata %v, want %v", gotMeta, meta)
	}
	f, err := got[0].Float32s()
	if err != nil || f[3] != 3.25 || f[4] != math.MaxFloat32 || !math.IsInf(float64(f[17]), -1) {
		t.Errorf("Float32s = %v, %v", f, err)
	}
	d, err := got[1].Float64s()
	if err != nil || !reflect.DeepEqual(d, []float64{1e-4, 0.01, math.Pi}) {
		t.Errorf("Float64s = %v, %v", d, err)
	}
	i64, err := got[2].Int64s()
	if err != nil || !reflect.DeepEqual(i64, []int64{0, math.MaxInt64}) {
		t.Errorf("Int64s = %v, %v", i64, err)
	}
	i32, err := got[3].Int32s()
	if err != nil || !reflect.DeepEqual(i32, []int32{-42}) {
		t.Errorf("Int32s = %v, %v", i32, err)
	}
	// Byte-level layout: header length word, 8-aligned header, buffer = concatenated data.
	raw, _ := os.ReadFile(path)
	n := binary.LittleEndian.Uint64(raw)
	if n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	var body []byte
	for _, x := range ts {
		body = append(body, x.Data...)
	}
	if !bytes.Equal(raw[8+n:], body) {
		t.Errorf("buffer differs from the concatenated tensor data")
	}
}

func TestEncodeDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	meta := map[string]string{"z": "1", "a": "2", "m": "3"}
	if err := Encode(&a, sample(), meta); err != nil {
		t.Fatal(err)
	}
	if err := Encode(&b, sample(), meta); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two encodings of the same tensors differ")
	}
}

func TestNoMetadata(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, sample()[:1], nil); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte(metadataKey)) {
		t.Error("empty metadata was written")
	}
	_, meta, err := Decode(buf.Bytes())
	if err != nil || meta != nil {
		t.Errorf("Decode: meta %v, err %v", meta, err)
	}
}

func TestConversions(t *testing.T) {
	f64 := F64("a", []int{2}, []float64{0.1, 1e300})
	f, err := f64.Float32s()
	if err != nil || f[0] != float32(0.1) || !math.IsInf(float64(f[1]), 1) {
		t.Errorf("F64 -> Float32s = %v, %v", f, err)
	}
	i64 := I64("t", []int{2}, []int64{5, 1 << 40})
	if _, err := i64.Int32s(); !errors.Is(err, ErrDType) || !strings.Contains(err.Error(), "element 1") {
		t.Errorf("I64 out of int32 range: err %v", err)
	}
	i32, err := I32("t", []int{2}, []int32{-1, 2}).Int64s()
	if err != nil || !reflect.DeepEqual(i32, []int64{-1, 2}) {
		t.Errorf("I32 -> Int64s = %v, %v", i32, err)
	}
	if _, err := i64.Float32s(); !errors.Is(err, ErrDType) {
		t.Errorf("Float32s of I64: err %v, want ErrDType", err)
	}
	if _, err := f64.Int64s(); !errors.Is(err, ErrDType) {
		t.Errorf("Int64s of F64: err %v, want ErrDType", err)
	}
	bad := Tensor{Name: "x", DType: "F32", Shape: []int{3}, Data: make([]byte, 8)}
	if _, err := bad.Float32s(); !errors.Is(err, ErrLayout) {
		t.Errorf("Float32s of inconsistent tensor: err %v, want ErrLayout", err)
	}
}

func TestHelperPanics(t *testing.T) {
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.HasPrefix(s, "safetensors: F32(\"w\")") {
			t.Errorf("panic %v, want a safetensors: F32 message", r)
		}
	}()
	F32("w", []int{2, 2}, []float32{1, 2, 3})
}

func TestEncodeRejects(t *testing.T) {
	ok := F32("a", []int{1}, []float32{1})
	cases := []struct {
		name string
		ts   []Tensor
		want error
	}{
		{"empty name", []Tensor{{Name: "", DType: "F32", Shape: []int{0}}}, ErrInvalid},
		{"reserved name", []Tensor{{Name: metadataKey, DType: "F32", Shape: []int{0}}}, ErrInvalid},
		{"duplicate", []Tensor{ok, ok}, ErrInvalid},
		{"unknown dtype", []Tensor{{Name: "a", DType: "F128", Shape: []int{0}}}, ErrDType},
		{"short data", []Tensor{{Name: "a", DType: "F32", Shape: []int{2}, Data: make([]byte, 4)}}, ErrInvalid},
		{"negative dim", []Tensor{{Name: "a", DType: "F32", Shape: []int{-1}}}, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Encode(&buf, c.ts, nil)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written despite the error", buf.Len())
			}
		})
	}
	// Write must leave an existing file untouched when the tensors are bad.
	path := filepath.Join(t.TempDir(), "keep.safetensors")
	if err := Write(path, []Tensor{ok}, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := Write(path, []Tensor{ok, ok}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a failed Write changed the existing file")
	}
}

// file assembles a safetensors file from a raw header string and a body.
func file(header string, body []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), body...)
}

func TestDecodeHostile(t *testing.T) {
	valid := func() []byte {
		var buf bytes.Buffer
		if err := Encode(&buf, sample(), map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	huge := binary.LittleEndian.AppendUint64(nil, math.MaxUint64)
	bigButBounded := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
	eight := make([]byte, 8)
	cases := []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "0 bytes"},
		{"seven bytes", valid[:7], ErrTruncated, "needs 8"},
		{"header cut", valid[:20], ErrTruncated, "header length"},
		{"body cut", valid[:len(valid)-1], ErrLayout, "outside"},
		{"huge header length", append(huge, '{', '}'), ErrHeader, "exceeds the limit"},
		{"header length over limit", append(bigButBounded, '{', '}'), ErrHeader, "exceeds the limit"},
		{"header length past end", append(binary.LittleEndian.AppendUint64(nil, 1000), "{}"...), ErrTruncated, "only 2 bytes"},
		{"zero header", eight, ErrHeader, "JSON object"},
		{"not json", file("hello!!!", nil), ErrHeader, "JSON object"},
		{"json array", file("[1,2,3] ", nil), ErrHeader, "JSON object"},
		{"broken json", file(`{"a": {"dtype":"F32",`, nil), ErrHeader, ""},
		{"trailing garbage", file(`{}x`, nil), ErrHeader, "unexpected bytes"},
		{"two objects", file(`{}{}`, nil), ErrHeader, "unexpected bytes"},
		{"duplicate name", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), ErrHeader, `duplicate name "a"`},
		{"empty name", file(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "empty tensor name"},
		{"unknown dtype", file(`{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrDType, `"F33"`},
		{"missing shape", file(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "no shape"},
		{"missing offsets", file(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), ErrHeader, "data_offsets has 0"},
		{"three offsets", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, make([]byte, 4)), ErrHeader, "has 3"},
		{"negative offset", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, make([]byte, 4)), ErrHeader, ""},
		{"fractional dim", file(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, ""},
		{"negative dim", file(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "negative or overflowing"},
		{"overflowing shape", file(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8)), ErrHeader, "negative or overflowing"},
		{"shape*dtype != bytes", file(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), ErrLayout, "needs 12"},
		{"offsets reversed", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`, make([]byte, 4)), ErrLayout, "outside"},
		{"offset past end", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 4)), ErrLayout, "outside"},
		{"huge offset", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}`, make([]byte, 4)), ErrLayout, ""},
		{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)), ErrLayout, "overlaps"},
		{"same range twice", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrLayout, "overlaps"},
		{"hole", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), ErrLayout, "hole of 4 bytes"},
		{"uncovered tail", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 8)), ErrLayout, "cover 4 bytes of the 8"},
		{"metadata not strings", file(`{"__metadata__":{"a":1}}`, nil), ErrHeader, "__metadata__"},
		{"entry not object", file(`{"a":[1,2]}`, nil), ErrHeader, `tensor "a"`},
		{"null entry", file(`{"a":null}`, nil), ErrDType, `dtype ""`},
		{"deep nesting", file(`{"a":`+strings.Repeat("[", 20000)+`}`, nil), ErrHeader, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts, meta, err := Decode(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err %q does not mention %q", err, c.msg)
			}
			if ts != nil || meta != nil {
				t.Errorf("returned tensors %v / metadata %v along with the error", ts, meta)
			}
		})
	}
}

func TestDecodeAcceptsSpecVariants(t *testing.T) {
	// Tensors listed out of buffer order, zero-size tensors, a dtype the typed accessors do
	// not handle, padding whitespace: all valid safetensors.
	h := `{"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]},"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},` +
		`"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},"__metadata__":{"format":"pt"}}    `
	body := []byte{0x80, 0x3f, 0, 0, 0x80, 0x3f}
	ts, meta, err := Decode(file(h, body))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range ts {
		names = append(names, x.Name)
	}
	if want := []string{"z", "a", "b"}; !reflect.DeepEqual(names, want) {
		t.Errorf("order %v, want %v (buffer order)", names, want)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata %v", meta)
	}
	if b, _ := Find(ts, "b"); true {
		v, err := b.Float32s()
		if err != nil || v[0] != 1 {
			t.Errorf("b = %v, %v", v, err)
		}
	}
	if _, ok := Find(ts, "missing"); ok {
		t.Error("Find reported a missing tensor")
	}
}

// pythonTorch returns /usr/bin/python3 after checking it has numpy and torch, failing the test
// with a clear message otherwise: the interop tests are part of CI and must not skip silently.
func pythonTorch(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	out, err := exec.Command(py, "-c", "import numpy, torch").CombinedOutput()
	if err != nil {
		t.Fatalf("%s with numpy and torch is required (Debian python3-torch python3-numpy, installed by scripts/setup.sh test): %v\n%s", py, err, out)
	}
	return py
}

func parityDir(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(here), "..", "..", "..", "shared", "anchors", "pytorch")
	if _, err := os.Stat(filepath.Join(dir, "parity.py")); err != nil {
		t.Fatalf("the parity oracle is required at %s: %v", dir, err)
	}
	return dir
}

// TestPythonInterop: a file we write is read by parity.py's read_safetensors with the same
// names, dtypes, shapes, values and metadata; a file parity.py's write_safetensors writes is
// read by Decode with the values numpy put in.
func TestPythonInterop(t *testing.T) {
	py := pythonTorch(t)
	dir := t.TempDir()
	goFile, pyFile := filepath.Join(dir, "go.safetensors"), filepath.Join(dir, "py.safetensors")
	ts := sample()
	ts[0] = F32(ts[0].Name, ts[0].Shape, []float32{0.5, -1, 2, 3.25, math.MaxFloat32, 0, 1e-38, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, -1.5})
	ts[2] = I64("t", []int{2}, []int64{0, -(1 << 62)})
	meta := map[string]string{"format": "pt", "note": "ünïcode"}
	if err := Write(goFile, ts, meta); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "interop.py"), parityDir(t), goFile, pyFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("interop.py: %v\n%s", err, stderr.String())
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("interop.py output: %v\n%s", err, out)
	}
	var gotMeta map[string]string
	json.Unmarshal(got[metadataKey], &gotMeta)
	if !reflect.DeepEqual(gotMeta, meta) {
		t.Errorf("python read metadata %v, want %v", gotMeta, meta)
	}
	npType := map[string]string{"F32": "float32", "F64": "float64", "I64": "int64", "I32": "int32"}
	for _, want := range ts {
		var e struct {
			DType  string    `json:"dtype"`
			Shape  []int     `json:"shape"`
			Values []float64 `json:"values"`
		}
		if err := json.Unmarshal(got[want.Name], &e); err != nil {
			t.Errorf("%s: %v", want.Name, err)
			continue
		}
		if e.DType != npType[want.DType] || !reflect.DeepEqual(e.Shape, want.Shape) {
			t.Errorf("%s: python sees %s %v, want %s %v", want.Name, e.DType, e.Shape, want.DType, want.Shape)
		}
		wantVals, _ := want.Float64s()
		if want.DType == "I64" || want.DType == "I32" {
			iv, _ := want.Int64s()
			wantVals = make([]float64, len(iv))
			for i, v := range iv {
				wantVals[i] = float64(v)
			}
		}
		if len(wantVals) == 0 {
			wantVals = nil
		}
		if len(e.Values) == 0 {
			e.Values = nil
		}
		if !reflect.DeepEqual(e.Values, wantVals) {
			t.Errorf("%s: python values %v, want %v", want.Name, e.Values, wantVals)
		}
	}
	if len(got) != len(ts)+1 {
		t.Errorf("python saw %d entries, want %d tensors + metadata", len(got)-1, len(ts))
	}

	// The other direction: parity.py's writer, our reader.
	pts, pmeta, err := Read(pyFile)
	if err != nil {
		t.Fatal(err)
	}
	if pmeta != nil {
		t.Errorf("metadata %v from a file without any", pmeta)
	}
	w, _ := Find(pts, "w")
	wv, err := w.Float32s()
	if err != nil || !reflect.DeepEqual(w.Shape, []int{2, 3, 4}) {
		t.Fatalf("w: %v %v", w.Shape, err)
	}
	for i, v := range wv {
		if want := float32(i) / 7; v != want {
			t.Errorf("w[%d] = %v, want %v", i, v, want)
		}
	}
	d, _ := Find(pts, "d")
	if dv, err := d.Float64s(); err != nil || !reflect.DeepEqual(dv, []float64{1e-300, -2.5, math.Pi, 1e300}) || !reflect.DeepEqual(d.Shape, []int{2, 2}) {
		t.Errorf("d = %v %v, %v", d.Shape, dv, err)
	}
	tt, _ := Find(pts, "t")
	if tv, err := tt.Int64s(); err != nil || !reflect.DeepEqual(tv, []int64{0, 999, -3}) || tt.DType != "I64" {
		t.Errorf("t = %s %v, %v", tt.DType, tv, err)
	}
	k, _ := Find(pts, "k")
	if kv, err := k.Int32s(); err != nil || !reflect.DeepEqual(kv, []int32{7, math.MinInt32}) || k.DType != "I32" {
		t.Errorf("k = %s %v, %v", k.DType, kv, err)
	}
	// parity.py's writer passes arrays through np.ascontiguousarray, which makes a 0-d array 1-d:
	// the scalar arrives with shape [1].
	s, _ := Find(pts, "s")
	if sv, err := s.Float32s(); err != nil || !reflect.DeepEqual(sv, []float32{3.25}) || !reflect.DeepEqual(s.Shape, []int{1}) {
		t.Errorf("s = %v %v, %v", s.Shape, sv, err)
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to a file that decodes
// to the same tensors and metadata.
func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	Encode(&buf, sample(), map[string]string{"a": "b"})
	f.Add(buf.Bytes())
	f.Add(file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(file(`{"__metadata__":{"x":"y"}}`, nil))
	f.Add(file(`{"a":{"dtype":"BF16","shape":[2,0],"data_offsets":[0,0]}}`, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, meta, err := Decode(b)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := Encode(&out, ts, meta); err != nil {
			t.Fatalf("decoded tensors do not re-encode: %v", err)
		}
		ts2, meta2, err := Decode(out.Bytes())
		if err != nil {
			t.Fatalf("re-encoded file does not decode: %v", err)
		}
		if len(meta) == 0 {
			meta = nil
		}
		if !reflect.DeepEqual(meta, meta2) || len(ts) != len(ts2) {
			t.Fatalf("metadata or count changed: %v %d -> %v %d", meta, len(ts), meta2, len(ts2))
		}
		for i := range ts {
			if ts[i].Name != ts2[i].Name || ts[i].DType != ts2[i].DType || !reflect.DeepEqual(ts[i].Shape, ts2[i].Shape) || !bytes.Equal(ts[i].Data, ts2[i].Data) {
				t.Fatalf("tensor %d changed: %+v -> %+v", i, ts[i], ts2[i])
			}
		}
	})
}
