#!/usr/bin/env python3
"""PyTorch + PEFT as the peer of gpu-host's MoE-LoRA training (not CI).

  check  Builds the tiny preset, trains a MoE-LoRA adapter for a few steps
         with `gpu-host train`, exports one expert with `gpu-host adapter
         export-expert`, loads that export with PEFT's PeftModel on
         transformers' LlamaForCausalLM, and compares its logits with
         `gpu-host adapter logits` for the same adapter (max |diff|).

  bench  Training tokens/s on the CPU for the same model (the small preset)
         and LoRA config (rank 16, alpha 32, q/k/v/o/gate/up/down) in
         PyTorch + PEFT at the given thread count, and, with --gpu-host, in
         the same run `gpu-host train` (MoE-LoRA: 4 experts, top-2) on the
         same data, read back from its metrics.jsonl. PEFT has no mixture of
         LoRA experts, so its side is one plain LoRA: slightly less work per
         token than two routed experts.

Setup (CPU is enough):
  python3 -m venv /tmp/peftref && /tmp/peftref/bin/pip install torch==2.5.1 transformers==4.46.3 peft==0.13.2 safetensors numpy
  cargo build -p gpu-host
  /tmp/peftref/bin/python gpu-host/tests/reference/peft_reference.py check
  /tmp/peftref/bin/python gpu-host/tests/reference/peft_reference.py bench --threads 2 --gpu-host target/debug/gpu-host
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = ROOT / "target" / "debug" / "gpu-host"


def run(*args):
    out = subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)
    return out.stdout


def prepare(gh, work, preset, seq_len, conversations):
    model, corpus, data = work / preset, work / "synthetic.jsonl", work / "data"
    run(gh, "init-model", "--preset", preset, "--out", model)
    run(gh, "data", "synth", "--out", corpus, "--conversations", conversations, "--seed", 1)
    run(gh, "data", "prepare", "--input", corpus, "--model", model, "--out", data, "--seq-len", seq_len, "--val-fraction", 0.05)
    return model, data


def check(args):
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = prepare(args.gpu_host, work, "tiny", 256, 64)
        out = work / "run"
        run(args.gpu_host, "train", "--model", model, "--data", data, "--out", out, "--steps", 10, "--lr", 3e-3,
            "--seq-len", 256, "--quiet", "--threads", 2)
        expert = work / "expert"
        run(args.gpu_host, "adapter", "export-expert", "--adapter", out / "adapter", "--expert", args.expert, "--out", expert)
        tokens = list(range(1, 41))
        ours = json.loads(run(args.gpu_host, "adapter", "logits", "--model", model, "--adapter", expert,
                              "--tokens", ",".join(map(str, tokens))))
        base = LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
        peft_model = PeftModel.from_pretrained(base, expert).eval()
        with torch.no_grad():
            theirs = peft_model(torch.tensor([tokens])).logits[0].reshape(-1)
            with peft_model.disable_adapter():
                plain = peft_model(torch.tensor([tokens])).logits[0].reshape(-1)
        diff = (torch.tensor(ours["logits"]) - theirs).abs().max().item()
        moved = (theirs - plain).abs().max().item()
        print(f"expert `{args.expert}` exported as a PEFT LoRA adapter: PEFT loads it; max |logit diff| vs gpu-host = {diff:.2e} "
              f"(the adapter moves the logits by up to {moved:.2e})")
        if diff > 1e-3:
            raise SystemExit("logits differ")


def bench(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = prepare(args.gpu_host, work, args.preset, args.seq_len, 600)
        base = LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
        cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        m = get_peft_model(base, cfg)
        m.print_trainable_parameters()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-4)
        vocab = base.config.vocab_size
        ids = torch.randint(0, vocab, (1, args.seq_len))
        times = []
        for step in range(args.steps + 1):
            t = time.perf_counter()
            loss = m(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if step > 0:  # the first is a warm-up
                times.append(time.perf_counter() - t)
        torch_tok_s = args.seq_len / (sum(times) / len(times))
        print(f"PyTorch {torch.__version__} + PEFT, {args.threads} threads, seq {args.seq_len}: {torch_tok_s:.0f} tok/s")
        if args.gpu_host:
            out = work / "gh"
            run(args.gpu_host, "train", "--model", model, "--data", data, "--out", out, "--steps", args.steps + 1,
                "--seq-len", args.seq_len, "--threads", args.threads, "--eval-every", 0, "--ckpt-every", 0, "--quiet")
            rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"tok_s"' in l][1:]
            ours = sum(r["tok_s"] for r in rows) / len(rows)
            print(f"gpu-host MoE-LoRA (4 experts, top-2), {args.threads} threads, seq {args.seq_len}: {ours:.0f} tok/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu-host", type=Path, default=DEFAULT_BIN)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--expert", default="psychology")
    b = sub.add_parser("bench")
    b.add_argument("--preset", default="small", choices=["tiny", "small"])
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--seq-len", type=int, default=1024)
    b.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    {"check": check, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
