"""Reference run for optim's PyTorch parity test: torch.optim.Adam with
torch.nn.utils.clip_grad_norm_ on given gradients.

    /usr/bin/python3 adam_torch.py PARITY_DIR IN.safetensors OUT.safetensors

IN : "p0" [n] F32 (initial parameters), "g" [S, n] F32 (the gradient of each step, before
     clipping), "lr" [S] F64 (the learning rate of each step), "hyper" [4] F64
     (beta1, beta2, eps, max_norm).
OUT: "p" [S, n], "m" [S, n], "v" [S, n] F32 after each step; "norm" [S] F64 (clip_grad_norm_'s
     returned total norm); "g_clipped" [S, n] F32 (the gradients Adam saw).
"""
import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from parity import read_safetensors, write_safetensors  # noqa: E402

torch.set_num_threads(1)
inp = read_safetensors(sys.argv[2])
beta1, beta2, eps, max_norm = (float(x) for x in inp["hyper"])
p = torch.nn.Parameter(torch.tensor(inp["p0"], dtype=torch.float32))
opt = torch.optim.Adam([p], lr=0.0, betas=(beta1, beta2), eps=eps, foreach=False)
P, M, V, N, G = [], [], [], [], []
for s in range(inp["g"].shape[0]):
    p.grad = torch.tensor(inp["g"][s], dtype=torch.float32)
    norm = torch.nn.utils.clip_grad_norm_([p], max_norm)
    G.append(p.grad.detach().numpy().copy())
    for group in opt.param_groups:
        group["lr"] = float(inp["lr"][s])
    opt.step()
    st = opt.state[p]
    P.append(p.detach().numpy().copy())
    M.append(st["exp_avg"].numpy().copy())
    V.append(st["exp_avg_sq"].numpy().copy())
    N.append(float(norm))
write_safetensors(sys.argv[3], {
    "p": np.stack(P), "m": np.stack(M), "v": np.stack(V),
    "norm": np.array(N, dtype=np.float64), "g_clipped": np.stack(G),
})
