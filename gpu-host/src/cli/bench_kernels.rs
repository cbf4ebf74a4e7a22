//! `gpu-host bench kernels`: per-kernel time, achieved GB/s and TFLOP/s,
//! and the fraction of the device's ceiling, on a CUDA device (see
//! `gpu_host::backend::cuda::bench`). Results go to `kernels/NOTES.md` by
//! hand, with the card and the command.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct KernelsArgs {
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Timed batches per kernel (the median is reported).
    #[arg(long, default_value_t = 7)]
    batches: usize,
    /// Launches per timed batch.
    #[arg(long, default_value_t = 10)]
    launches: usize,
    /// The copy ceiling in GB/s (default: measured with a 1 GiB device copy).
    #[arg(long)]
    copy_gbs: Option<f64>,
    /// The bf16 tensor ceiling in TFLOP/s (default: measured with an 8192³ cuBLASLt GEMM).
    #[arg(long)]
    tensor_tflops: Option<f64>,
    /// Only kernels whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
}

#[cfg(feature = "cuda")]
pub fn run(args: KernelsArgs) -> Result<()> {
    use gpu_host::backend::cuda::bench::{KernelBenchOptions, run};
    let opts = KernelBenchOptions {
        ordinal: args.device,
        batches: args.batches,
        launches: args.launches,
        copy_gbs: args.copy_gbs,
        tensor_tflops: args.tensor_tflops,
        filter: args.filter,
    };
    let report = run(&opts)?;
    print!("{}", report.table());
    Ok(())
}

#[cfg(not(feature = "cuda"))]
pub fn run(_: KernelsArgs) -> Result<()> {
    anyhow::bail!("this gpu-host was built without the `cuda` feature")
}
