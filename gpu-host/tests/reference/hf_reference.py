#!/usr/bin/env python3
"""Hugging Face transformers as the peer of gpu-host's CPU backend.

Two jobs, both on checkpoints that `gpu-host init-model` writes (the script
runs it, so the checkpoint is byte-for-byte the one the Rust tests build):

  fixture  Loads tiny checkpoints with transformers' LlamaForCausalLM /
           Qwen2ForCausalLM (f32, CPU) and writes reference token ids,
           rendered chat prompts and logits (every prompt position, then
           greedy decode steps) to gpu-host/tests/fixtures/. The Rust test
           `hf_reference` regenerates each checkpoint from the recorded
           spec and compares. CI uses the committed fixture and never runs
           this script.

  bench    Prefill and decode tokens/s of transformers on the CPU for a
           checkpoint (e.g. the small preset), at 1 and 2 threads, measured
           the way `gpu-host bench forward` measures: a prompt of random
           tokens in one forward pass, then one token at a time with the KV
           cache, best of N rounds after a warm-up. With --gpu-host it also
           runs `gpu-host bench forward` for the same checkpoint in the same
           run, so both sets of figures share the machine's conditions.

Setup (CPU is enough):
  python3 -m venv /tmp/hfref && /tmp/hfref/bin/pip install torch transformers safetensors numpy
  cargo build -p gpu-host
  /tmp/hfref/bin/python gpu-host/tests/reference/hf_reference.py fixture
  /tmp/hfref/bin/python gpu-host/tests/reference/hf_reference.py bench --preset small --gpu-host target/debug/gpu-host
"""

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "gpu-host" / "tests" / "fixtures"
DEFAULT_BIN = ROOT / "target" / "debug" / "gpu-host"

# The variants the fixture covers. Tiny presets all use grouped-query
# attention (6 query heads over 2 kv heads).
VARIANTS = [
    # llama, GQA, untied lm_head, plain rope
    {"name": "llama-gqa-untied", "spec": {"preset": "tiny", "arch": "llama", "seed": 1, "tie_embeddings": False,
                                          "llama3_rope_scaling": False, "dtype": "f32"}},
    # llama, tied embeddings, llama3 rope_scaling
    {"name": "llama-tied-llama3-rope", "spec": {"preset": "tiny", "arch": "llama", "seed": 2, "tie_embeddings": True,
                                                "llama3_rope_scaling": True, "dtype": "f32"}},
    # qwen2: q/k/v bias, tied embeddings (qwen2's default), GQA
    {"name": "qwen2-bias-tied", "spec": {"preset": "tiny", "arch": "qwen2", "seed": 3, "tie_embeddings": None,
                                         "llama3_rope_scaling": False, "dtype": "f32"}},
]

CASES = [
    {"name": "plain", "kind": "prompt",
     "text": "How have you been sleeping this week? I keep waking up at three."},
    {"name": "unicode", "kind": "prompt",
     "text": "Café notes: breathe in 4, out 6 — then write it down ✓"},
    {"name": "chat", "kind": "chat", "messages": [
        {"role": "system", "content": "You are a kind and careful listener."},
        {"role": "user", "content": "  I snapped at my partner again and feel awful.  "},
    ]},
]

DECODE_STEPS = 8


def init_model(gpu_host, spec, out):
    cmd = [str(gpu_host), "init-model", "--preset", spec["preset"], "--arch", spec["arch"],
           "--seed", str(spec["seed"]), "--dtype", spec["dtype"], "--out", str(out)]
    if spec.get("tie_embeddings") is not None:
        cmd += ["--tie-embeddings", "true" if spec["tie_embeddings"] else "false"]
    if spec.get("llama3_rope_scaling"):
        cmd.append("--llama3-rope-scaling")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})


def load_hf(path):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, Qwen2ForCausalLM

    config = json.loads((Path(path) / "config.json").read_text())
    cls = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}[config["model_type"]]
    model = cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def fixture(args):
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors = {}
    record = {
        "about": "Reference logits from Hugging Face transformers for checkpoints written by "
                 "`gpu-host init-model` with the recorded specs. Written by "
                 "gpu-host/tests/reference/hf_reference.py; compared by gpu-host/tests/hf_reference.rs.",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "decode_steps": DECODE_STEPS,
        "variants": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            path = Path(tmp) / variant["name"]
            init_model(args.gpu_host, variant["spec"], path)
            model, tokenizer = load_hf(str(path))
            cases = []
            for case in CASES:
                entry = {k: v for k, v in case.items()}
                if case["kind"] == "prompt":
                    ids = tokenizer(case["text"]).input_ids
                else:
                    rendered = tokenizer.apply_chat_template(case["messages"], add_generation_prompt=True,
                                                             tokenize=False)
                    entry["rendered"] = rendered
                    ids = tokenizer(rendered, add_special_tokens=False).input_ids
                entry["token_ids"] = ids
                input_ids = torch.tensor([ids])
                with torch.inference_mode():
                    prefill = model(input_ids).logits[0]
                    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                         max_new_tokens=DECODE_STEPS, min_new_tokens=DECODE_STEPS,
                                         output_logits=True, return_dict_in_generate=True,
                                         pad_token_id=tokenizer.pad_token_id)
                generated = out.sequences[0, len(ids):].tolist()
                decode = torch.stack([l[0] for l in out.logits])
                entry["greedy_token_ids"] = generated
                key = f"{variant['name']}/{case['name']}"
                tensors[f"{key}/prefill_logits"] = prefill.float().contiguous()
                tensors[f"{key}/decode_logits"] = decode.float().contiguous()
                cases.append(entry)
            record["variants"].append({"name": variant["name"], "spec": variant["spec"], "cases": cases})
            print(f"{variant['name']}: {len(cases)} cases", file=sys.stderr)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(FIXTURES / "hf_reference_logits.safetensors"), metadata={"format": "pt"})
    (FIXTURES / "hf_reference.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURES}/hf_reference.json and hf_reference_logits.safetensors", file=sys.stderr)


def bench_hf(path, threads, prompt_tokens, decode_tokens, repeats):
    import torch
    from transformers import DynamicCache

    torch.set_num_threads(threads)
    model, _ = load_hf(str(path))
    # transformers 5 renames the cache argument of forward().
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1234)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=gen)
    best_prefill = best_decode = float("inf")
    with torch.inference_mode():
        for rnd in range(repeats + 1):
            cache = DynamicCache(config=model.config)
            t = time.perf_counter()
            out = model(prompt, **{cache_kw: cache}, use_cache=True, logits_to_keep=1)
            prefill = time.perf_counter() - t
            nxt = out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            for _ in range(decode_tokens):
                out = model(nxt, **{cache_kw: cache}, use_cache=True)  # the cache grows in place
                nxt = out.logits[:, -1:].argmax(-1)
            decode = time.perf_counter() - t
            if rnd > 0 or repeats == 0:
                best_prefill = min(best_prefill, prefill)
                best_decode = min(best_decode, decode)
    return prompt_tokens / best_prefill, decode_tokens / best_decode


def bench(args):
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else Path(tmp) / f"{args.preset}-llama"
        if not args.model:
            init_model(args.gpu_host, {"preset": args.preset, "arch": "llama", "seed": 0, "dtype": "f32"}, path)
        print(f"checkpoint: {path}  transformers {transformers.__version__}, torch {torch.__version__}")
        print(f"prompt {args.prompt_tokens} tokens, decode {args.decode_tokens} tokens, best of {args.repeats}")
        print(f"{'engine':<26}{'threads':>8}{'prefill tok/s':>15}{'decode tok/s':>14}")
        for threads in args.threads:
            if args.gpu_host and Path(args.gpu_host).exists():
                res = subprocess.run(
                    [str(args.gpu_host), "bench", "forward", "--model", str(path), "--threads", str(threads),
                     "--prompt-tokens", str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens),
                     "--repeats", str(args.repeats)], check=True, capture_output=True, text=True).stdout
                figures = {line.split(":")[0]: float(line.split(":")[1].split()[0])
                           for line in res.splitlines() if line.startswith(("prefill", "decode"))}
                print(f"{'gpu-host cpu (f32)':<26}{threads:>8}{figures['prefill']:>15.1f}{figures['decode']:>14.1f}",
                      flush=True)
            pre, dec = bench_hf(path, threads, args.prompt_tokens, args.decode_tokens, args.repeats)
            print(f"{'transformers cpu (f32)':<26}{threads:>8}{pre:>15.1f}{dec:>14.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu-host", type=Path, default=DEFAULT_BIN, help="the gpu-host binary (default: %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fixture", help="write the reference fixture")
    b = sub.add_parser("bench", help="time transformers (and gpu-host) on the CPU")
    b.add_argument("--preset", default="small", choices=["tiny", "small"])
    b.add_argument("--model", help="an existing checkpoint instead of a generated preset")
    b.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    b.add_argument("--prompt-tokens", type=int, default=128)
    b.add_argument("--decode-tokens", type=int, default=64)
    b.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not args.gpu_host.exists():
        sys.exit(f"{args.gpu_host} not found: run `cargo build -p gpu-host` or pass --gpu-host")
    {"fixture": fixture, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
