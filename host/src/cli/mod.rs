//! Command line: clap derive, doc comments are the help. This file holds
//! the arguments; `commands` runs each through one library call and prints
//! what it did; `run` prints a config run's summary.

/// `println!` for command output: a reader that goes away (`tinykd inspect
/// F | head`) ends the command quietly instead of a "Broken pipe" panic.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}
/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*)) };
}

mod args;
mod commands;
mod run;

pub use args::*;
pub use commands::print_emulation;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::progress::Progress;

/// Knowledge distillation for microcontrollers: ONNX teacher → int8 no_std student.
#[derive(Debug, Parser)]
#[command(name = "tinykd", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// No progress bars or status lines (results and errors only).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print progress as plain lines when stderr is not a terminal (logs, CI).
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a student on a teacher's softened outputs (and the hard labels).
    ///
    /// Example: tinykd distill --teacher models/teachers/mnist1d_cnn.onnx --data models/data/mnist1d.npz
    ///          --student "dense(64) relu dense(32) relu dense(10)" --temperature 4 --alpha 0.9 --out student.ckpt
    Distill(DistillArgs),
    /// Grid over temperature × α (× students × seeds), selected on validation accuracy.
    ///
    /// α = 0 (no teacher) is always in the grid. Writes sweep.md, sweep.json, sweep.png and the
    /// selected student.ckpt to the --out directory.
    /// Example: tinykd sweep --teacher models/teachers/mnist1d_cnn.onnx --data models/data/mnist1d.npz
    ///          --student "dense(32) relu dense(10)" --temperatures 1,2,4,8 --alphas 0,0.5,0.9,1 --out sweep/
    Sweep(SweepArgs),
    /// Run the teacher(s) over every split and fill the teacher-logit cache.
    ///
    /// Example: tinykd teach --teacher models/teachers/mnist1d_cnn.onnx --data models/data/mnist1d.npz
    Teach(TeachArgs),
    /// Quantize a float student to int8 (TFLite spec) and write a .tkd blob.
    ///
    /// Example: tinykd quantize --student student.ckpt --data models/data/mnist1d.npz --out student.tkd
    Quantize(QuantizeArgs),
    /// Measure a teacher (.onnx), float student (.ckpt) or int8 student (.tkd) on a split.
    ///
    /// Example: tinykd eval --model student.tkd --data models/data/mnist1d.npz --json
    Eval(EvalArgs),
    /// Run an int8 student on an emulated board (QEMU) and compare with the host bit for bit.
    ///
    /// Example: tinykd emulate --model student.tkd --data models/data/mnist1d.npz --board qemu-mps2-an385 --json
    Emulate(EmulateArgs),
    /// Write a student in another format: ONNX (float), ONNX QDQ, TFLite, Rust or C source (int8).
    ///
    /// Example: tinykd export --model student.ckpt --format onnx --out student.onnx
    ///          tinykd export --model student.tkd --format tflite --out student.tflite
    Export(ExportArgs),
    /// Convert an int8 TFLite model (.tflite) into an int8 model tinykd runs (.tkd).
    ///
    /// Example: tinykd import kws_ref_model.tflite --out kws.tkd
    Import(ImportArgs),
    /// Build a real board's firmware with an int8 student, check it fits, and flash it (probe-rs).
    ///
    /// Boards: microbit, stm32f405, nrf52840-dk, rp-pico (wiring: docs/pipeline.md, "Flash and verify on a real board"). The fit check
    /// runs before anything is built; --build-only stops after the build and prints the ELF.
    /// Example: tinykd flash --model student.tkd --board microbit
    Flash(FlashArgs),
    /// Stream a split to a board running the student and compare with the host, bit for bit.
    ///
    /// With --port, a real board flashed by `tinykd flash` (its USB serial or a USB-UART adapter);
    /// with --board qemu-…, the emulated board (the same as `tinykd emulate`).
    /// Example: tinykd verify --model student.tkd --data models/data/mnist1d.npz --port /dev/ttyACM0
    Verify(VerifyArgs),
    /// Throughput: student training against PyTorch, and teacher inference (ort vs tract).
    ///
    /// With --student: tinykd's training against PyTorch on the same student, data, batch,
    /// epochs and loss (PyTorch runs scripts/bench_train_pytorch.py when --python has torch).
    /// With --teacher: samples/s of onnxruntime and tract at batch 1, 32 and 256.
    /// With --firmware: the device kernels' instructions per MAC on M3 and M4 against CMSIS-NN.
    /// Example: tinykd bench --data models/data/mnist1d.npz --student "dense(32) relu dense(10)"
    ///          --teacher models/teachers/mnist1d_cnn.onnx
    Bench(BenchArgs),
    /// Describe a dataset (.npz, .csv, IDX directory), a teacher (.onnx) or an int8 model (.tkd).
    ///
    /// Example: tinykd inspect models/data/mnist1d.npz
    Inspect(InspectArgs),
    /// Run the whole pipeline from a TOML config (resumable): teacher, distill or sweep, quantize (PTQ/QAT),
    /// export, emulate or a real board, and the report (report.md, report.html).
    ///
    /// Example: tinykd run models/configs/mnist1d_mlp.toml
    Run(RunArgs),
    /// Write a commented starter config for your data (and teacher): a student
    /// sized to the samples, the smallest emulated board it fits.
    ///
    /// Example: tinykd init --data my_data.npz --teacher my_teacher.onnx --out my.toml
    Init(InitArgs),
}

/// Writes command output to stdout; exits quietly (status 0, as `head`'s
/// writer would expect) when the reader has closed the pipe.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let progress = Progress::with(match (cli.quiet, cli.verbose) {
        (true, _) => crate::progress::Verbosity::Quiet,
        (_, true) => crate::progress::Verbosity::Verbose,
        _ => crate::progress::Verbosity::Normal,
    });
    match cli.command {
        Command::Distill(a) => commands::distill(a, &progress),
        Command::Sweep(a) => commands::sweep(a, &progress),
        Command::Teach(a) => commands::teach(a, &progress),
        Command::Quantize(a) => commands::quantize(a, &progress),
        Command::Eval(a) => commands::eval(a, &progress),
        Command::Emulate(a) => commands::emulate(a),
        Command::Flash(a) => commands::flash(a),
        Command::Export(a) => {
            crate::export::export(&a.model, a.format, &a.out)?;
            outln!("wrote {}", a.out.display());
            Ok(())
        }
        Command::Import(a) => {
            let blob = crate::export::tflite_import::import_file(&a.model)?;
            crate::util::write_atomic(&a.out, &blob)?;
            let m = crate::int8::parse(&blob)?;
            outln!(
                "wrote {} ({} layers, {} B, arena {} B)",
                a.out.display(),
                m.layer_count(),
                blob.len(),
                m.arena_bytes()
            );
            Ok(())
        }
        Command::Verify(a) => commands::verify(a),
        Command::Bench(a) => commands::bench(a, &progress),
        Command::Inspect(a) => {
            out!("{}", crate::inspect::inspect(&a.file, a.layout)?);
            Ok(())
        }
        Command::Run(a) => run::run_config(&a.config, a.json, &progress),
        Command::Init(a) => {
            outln!("{}", crate::pipeline::init::init(&a.options())?);
            Ok(())
        }
    }
}
