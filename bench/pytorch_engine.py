#!/usr/bin/python3
"""PyTorch twin of `ddpm model bench`: CPU time (process_time) and wall time per step.

The models are the anchor's own classes, imported from anchors/pytorch/unet_bench.py (never
copied): --model small is SmallUNet, ddpm is DDPMUNet (the cifar10 preset), and tiny is SmallUNet's
layout rebuilt from the anchor's blocks at the tiny preset's size (ch 16, 1 channel, temb 16 -> 64,
no dropout; 208,305 parameters, as unet.Preset("tiny")).

--mode train:   q_sample, forward (train mode), L_simple, backward, clip_grad_norm_(1), Adam(2e-4)
--mode forward: forward only under no_grad (train mode, dropout on), as the anchor's fwd phase
                (t, eps and q_sample drawn outside the timed region)
--mode sample:  reverse-process steps (Algorithm 2, eval mode, no_grad): eps = net(x, t),
                x0 = clip(sqrt(1/abar) x - sqrt(1/abar - 1) eps), x = mean + sqrt(beta_t) z,
                as diffusion.Schedule.Denoise with fixed-large variance; one step per timed step.

Prints one JSON line: per-step wall "times" and CPU "cpu" (seconds; CPU of all threads), the
medians, the parameter count and the peak RSS. Use /usr/bin/python3 (Debian python3-torch).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_anchor(path):
    sys.path.insert(0, path)
    import unet_bench  # noqa: E402  (the anchor; its main() does not run on import)
    return unet_bench


def tiny_unet(ub):
    """SmallUNet's modules at the tiny preset's size; forward is SmallUNet.forward itself."""
    import torch.nn as nn

    net = ub.SmallUNet.__new__(ub.SmallUNet)
    nn.Module.__init__(net)
    td, g, eps = 64, 8, 1e-5
    R = lambda ci, co: ub.ResBlock(ci, co, td, g, 0.0, eps)  # noqa: E731
    A = lambda c: ub.AttnBlock(c, g, eps)  # noqa: E731
    net.temb = ub.TimeEmbed(16, td)
    net.conv_in = nn.Conv2d(1, 16, 3, padding=1)
    net.d0_res, net.d0_down = R(16, 16), ub.Down(16)
    net.d1_res, net.d1_attn, net.d1_down = R(16, 32), A(32), ub.Down(32)
    net.d2_res = R(32, 32)
    net.mid_res1, net.mid_attn, net.mid_res2 = R(32, 32), A(32), R(32, 32)
    net.u2_res, net.u2_up = R(64, 32), ub.Up(32)
    net.u1_res, net.u1_attn, net.u1_up = R(64, 32), A(32), ub.Up(32)
    net.u0_res = R(48, 16)
    net.norm_out = nn.GroupNorm(g, 16, eps=eps)
    net.conv_out = nn.Conv2d(16, 1, 3, padding=1)
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["small", "ddpm", "tiny"], default="small")
    ap.add_argument("--mode", choices=["train", "forward", "sample"], default="train")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--anchors", default=os.path.join(HERE, "..", "..", "shared", "anchors", "pytorch"))
    a = ap.parse_args()

    ub = load_anchor(os.path.abspath(a.anchors))
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = {"small": ub.SmallUNet, "ddpm": ub.DDPMUNet, "tiny": lambda: tiny_unet(ub)}[a.model]()
    cin = model.conv_in.in_channels
    T = 1000
    sab, s1mab = ub.linear_schedule(T)
    abar = sab.double() ** 2
    betas = torch.cat([1 - abar[:1], 1 - abar[1:] / abar[:-1]]).float()
    B = a.batch
    x0 = torch.rand(B, cin, 32, 32) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8)

    def train_step(i):
        t = torch.randint(0, T, (B,))
        eps = torch.randn_like(x0)
        xt = sab[t].view(B, 1, 1, 1) * x0 + s1mab[t].view(B, 1, 1, 1) * eps
        loss = F.mse_loss(model(xt, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    fwd_batch = []

    def forward_prep(i):
        t = torch.randint(0, T, (B,))
        eps = torch.randn_like(x0)
        fwd_batch[:] = [sab[t].view(B, 1, 1, 1) * x0 + s1mab[t].view(B, 1, 1, 1) * eps, t, eps]

    def forward_step(i):
        xt, t, eps = fwd_batch
        with torch.no_grad():
            float(F.mse_loss(model(xt, t), eps))

    x = torch.randn(B, cin, 32, 32)

    def sample_step(i):
        nonlocal x
        ti = T - 1 - (i % T)
        t = torch.full((B,), ti, dtype=torch.long)
        with torch.no_grad():
            eps = model(x, t)
            ab = abar[ti].float()
            px = (x / ab.sqrt() - (1 / ab - 1).sqrt() * eps).clamp(-1, 1)
            ab_prev = abar[ti - 1].float() if ti > 0 else torch.tensor(1.0)
            c0 = betas[ti] * ab_prev.sqrt() / (1 - ab)
            ct = (1 - ab_prev) * (1 - betas[ti]).sqrt() / (1 - ab)
            x = c0 * px + ct * x
            if ti > 0:
                x = x + betas[ti].sqrt() * torch.randn_like(x)

    prep = lambda i: None  # noqa: E731  (untimed set-up of a step)
    if a.mode == "train":
        model.train()
        step = train_step
    elif a.mode == "forward":
        model.train()
        prep, step = forward_prep, forward_step
    else:
        model.eval()
        step = sample_step
    times, cpu = [], []
    for i in range(a.warmup + a.steps):
        prep(i)
        t0, c0 = time.perf_counter(), time.process_time()
        step(i)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= a.warmup:
            times.append(dt)
            cpu.append(dc)
    print(json.dumps({
        "impl": "pytorch", "model": a.model, "mode": a.mode, "batch": B, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "s_per_step_median": statistics.median(times), "cpu_s_per_step_median": statistics.median(cpu),
        "times": [round(v, 5) for v in times], "cpu": [round(v, 5) for v in cpu],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
