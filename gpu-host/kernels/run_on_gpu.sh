#!/usr/bin/env bash
# Runs the CUDA test suite and the kernel benchmarks on a GPU machine from
# prebuilt binaries (the lent GPU machines have no Rust toolchain).
#
# Here (no GPU needed):
#   cargo test -p gpu-host --test cuda_kernels --test cuda_model --test cuda_train --test cuda_ptxas --no-run
#   cargo build -p gpu-host
#   mkdir -p target/gpurun && cp <the three test executables cargo printed> target/gpurun/
#   cp target/debug/gpu-host target/gpurun/ && strip target/gpurun/* && xz -T0 target/gpurun/*
# There (the repository root, target/gpurun carried):
#   bash gpu-host/kernels/run_on_gpu.sh target/gpurun
# Logs go to $OUT (or /tmp/gpurun-out) as well as stdout.
set -uo pipefail
BIN=$(realpath "${1:?usage: run_on_gpu.sh DIR_WITH_BINARIES}")
LOG_DIR=${OUT:-/tmp/gpurun-out}
mkdir -p "$LOG_DIR"
WORK=$(mktemp -d)
for f in "$BIN"/*; do
    case "$f" in
        *.xz) xz -dc "$f" >"$WORK/$(basename "$f" .xz)" ;;
        *) cp "$f" "$WORK/" ;;
    esac
done
chmod +x "$WORK"/*
# The test binaries carry a hash in their names (cuda_kernels-0123abcd).
bin() { ls "$WORK"/"$1"* | head -n 1; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv

# cudarc opens libcuda, libnvrtc and libcublasLt by soname.
lib_dirs=""
for lib in libcuda.so.1 libnvrtc.so.13 libcublasLt.so.13; do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
    [ -z "$path" ] && path=$(find /usr/local /usr/lib /opt -name "$lib" 2>/dev/null | head -n 1)
    echo "$lib: ${path:-NOT FOUND}"
    [ -n "$path" ] && lib_dirs="$lib_dirs:$(dirname "$path")"
done
export LD_LIBRARY_PATH="${lib_dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/usr/local/cuda/bin:$PATH"
export GPU_HOST_KERNEL_CACHE="$WORK/kernel-cache"
export RUST_BACKTRACE=1
export GPU_HOST_REQUIRE_CUDA=1  # a skip here would be a wasted run: fail instead

status=0
step() {
    local name=$1
    shift
    echo "=== $name: $*"
    local t0=$SECONDS
    if "$@" 2>&1 | tee "$LOG_DIR/$name.log"; then
        echo "=== $name: ok ($((SECONDS - t0)) s)"
    else
        echo "=== $name: FAILED ($((SECONDS - t0)) s)"
        status=1
    fi
}

# SKIP_PTXAS, SKIP_KERNEL_BENCH, SKIP_1B, SKIP_SERVE, SKIP_SANITIZERS: leave a part out.
[ -z "${SKIP_PTXAS:-}" ] && step ptxas "$(bin cuda_ptxas)" --nocapture --test-threads=1
step kernels "$(bin cuda_kernels)" --nocapture --test-threads=1
step model "$(bin cuda_model)" --nocapture --test-threads=1
step train "$(bin cuda_train)" --nocapture --test-threads=1
[ -z "${SKIP_KERNEL_BENCH:-}" ] && step bench "$WORK/gpu-host" bench kernels
# Serving on the GPU: the small preset through `serve --device cuda`,
# loaded by `bench serve` at concurrency 1, 4 and 16.
step init-small "$WORK/gpu-host" init-model --preset small --out "$WORK/small"
step forward-small "$WORK/gpu-host" bench forward --model "$WORK/small" --device cuda
# MoE-LoRA training steps: the small preset, then the 1B class (bf16 base).
step train-small "$WORK/gpu-host" bench train --model "$WORK/small" --device cuda --seq-len 1024 --steps 5 \
    --json "$LOG_DIR/train-small.json"
if [ -z "${SKIP_1B:-}" ]; then
    step init-1b "$WORK/gpu-host" init-model --preset 1b --dtype bf16 --out "$WORK/1b"
    for seq in 512 2048; do
        step train-1b-$seq "$WORK/gpu-host" bench train --model "$WORK/1b" --device cuda --seq-len $seq --steps 3 \
            --profile --json "$LOG_DIR/train-1b-$seq.json"
    done
fi
serve_bench() {
    "$WORK/gpu-host" serve --model "$WORK/small" --device cuda --listen 127.0.0.1:8091 >"$WORK/serve.out" 2>"$LOG_DIR/serve-server.log" &
    local pid=$!
    for _ in $(seq 1 600); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
    local rc=0
    for c in 1 4 16; do
        "$WORK/gpu-host" bench serve --url http://127.0.0.1:8091 --concurrency $c --requests $((c * 8)) \
            --max-tokens 64 --fixed-length --json "$LOG_DIR/serve-c$c.json" || rc=1
    done
    kill $pid
    return $rc
}
[ -z "${SKIP_SERVE:-}" ] && step serve-small serve_bench
# The sanitizers last, bounded: out-of-bounds accesses and shared-memory races.
if [ -z "${SKIP_SANITIZERS:-}" ] && command -v compute-sanitizer >/dev/null; then
    step memcheck timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$(bin cuda_kernels)" --test-threads=1 flash
    step racecheck timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 \
        "$(bin cuda_kernels)" --test-threads=1 cuda_flash_attention_bf16
fi
exit $status
