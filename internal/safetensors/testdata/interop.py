"""Interop check for internal/safetensors: read a Go-written file with the parity oracle's reader
and write one with its writer.

    /usr/bin/python3 interop.py PARITY_DIR GO_FILE PY_FILE

Prints one JSON line: every tensor of GO_FILE as {name: {"dtype", "shape", "values"}} plus the
raw header's "__metadata__"; writes PY_FILE with parity.write_safetensors from fixed values.
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
from parity import read_safetensors, write_safetensors  # noqa: E402

go_file, py_file = sys.argv[2], sys.argv[3]
ts = read_safetensors(go_file)
with open(go_file, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    meta = json.loads(f.read(n)).get("__metadata__")
out = {"__metadata__": meta}
for name, a in ts.items():
    out[name] = {"dtype": str(a.dtype), "shape": list(a.shape), "values": [float(x) if a.dtype.kind == "f" else int(x) for x in a.reshape(-1)]}
print(json.dumps(out))

write_safetensors(py_file, {
    "w": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "d": np.array([[1e-300, -2.5], [np.pi, 1e300]], dtype=np.float64),
    "t": np.array([0, 999, -3], dtype=np.int64),
    "k": np.array([7, -2147483648], dtype=np.int32),
    "s": np.array(3.25, dtype=np.float32),
})
