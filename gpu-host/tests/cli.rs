//! The `gpu-host` binary end to end: init-model, generate (prompt and
//! chat), bench forward and train, and bad input that exits with a message.

use std::process::{Command, Output};

fn gpu_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-host"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn init_model_generate_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let m = model.to_str().unwrap();
    ok(&gpu_host(&[
        "init-model",
        "--preset",
        "tiny",
        "--arch",
        "qwen2",
        "--out",
        m,
    ]));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(model.join(f).exists(), "{f}");
    }

    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Hello there",
        "--max-tokens",
        "12",
        "--temperature",
        "0.9",
        "--seed",
        "5",
    ];
    let a = ok(&gpu_host(&args));
    assert!(!a.trim().is_empty());
    assert_eq!(a, ok(&gpu_host(&args)), "same seed, same text");

    let chat = dir.path().join("chat.json");
    std::fs::write(
        &chat,
        r#"{"messages": [{"role": "user", "content": "I feel tired."}]}"#,
    )
    .unwrap();
    ok(&gpu_host(&[
        "generate",
        "--model",
        m,
        "--chat",
        chat.to_str().unwrap(),
        "--max-tokens",
        "8",
    ]));

    let bench = ok(&gpu_host(&[
        "bench",
        "forward",
        "--model",
        m,
        "--threads",
        "1",
        "--prompt-tokens",
        "16",
        "--decode-tokens",
        "4",
        "--repeats",
        "1",
    ]));
    assert!(
        bench.contains("prefill:") && bench.contains("decode:") && bench.contains("tokens/s"),
        "{bench}"
    );
}

#[test]
fn bad_input_exits_with_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = gpu_host(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error:")
            && stderr.contains("tokenizer.json")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    // A chat file of the wrong shape.
    let model = dir.path().join("m");
    ok(&gpu_host(&[
        "init-model",
        "--preset",
        "tiny",
        "--out",
        model.to_str().unwrap(),
    ]));
    let chat = dir.path().join("chat.json");
    std::fs::write(&chat, r#"{"turns": []}"#).unwrap();
    let out = gpu_host(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--chat",
        chat.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("chat.json") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // --prompt and --chat are exclusive, and one is required.
    assert!(
        !gpu_host(&["generate", "--model", model.to_str().unwrap()])
            .status
            .success()
    );
    let help = ok(&gpu_host(&["generate", "--help"]));
    assert!(
        help.contains("--chat") && help.contains("--temperature"),
        "{help}"
    );
}

#[test]
fn bench_train_prints_a_table_and_refuses_a_bad_device() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let m = model.to_str().unwrap();
    ok(&gpu_host(&["init-model", "--preset", "tiny", "--out", m]));
    // Training steps on the CPU reference: a table with a positive rate.
    let table = ok(&gpu_host(&[
        "bench",
        "train",
        "--model",
        m,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--seq-len",
        "64",
        "--steps",
        "1",
    ]));
    let row = table.lines().last().unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(table.contains("tokens/s") && cells[1] == "cpu", "{table}");
    let tok_s: f64 = cells[7].parse().unwrap();
    assert!(tok_s > 0.0, "{table}");
    // A device that does not exist is refused, naming the option.
    let out = gpu_host(&["bench", "train", "--model", m, "--device", "tpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("`device`") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
