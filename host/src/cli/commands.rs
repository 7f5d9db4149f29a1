//! The subcommands: each takes its parsed arguments, runs the pipeline stage
//! and prints what it did.

use anyhow::{Context, Result, bail};

use super::{BenchArgs, DistillArgs, EmulateArgs, EvalArgs, FlashArgs, QuantizeArgs, SweepArgs, TeachArgs, VerifyArgs};

use crate::pipeline;
use crate::progress::Progress;
use crate::quant::Calibration;

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

pub(super) fn distill(a: DistillArgs, progress: &Progress) -> Result<()> {
    let opts = a.to_options();
    let out = pipeline::distill(&opts, progress)?;
    out.checkpoint.save(&a.out)?;
    if a.json {
        let run = |s: &pipeline::TrainedStudent| {
            serde_json::json!({
                "test_accuracy": s.test_accuracy,
                "teacher_agreement": s.teacher_agreement,
                "steps": s.report.steps,
                "step_budget": s.report.step_budget,
                "rows": s.report.rows,
                "best_val_accuracy": s.report.best_val_accuracy,
            })
        };
        let mut kd = run(&out.kd);
        kd["alpha"] = opts.alpha.to_string().parse::<f64>().unwrap_or_default().into();
        kd["parameters"] = out.kd.student.param_count().into();
        let json = serde_json::json!({
            "teacher_test_accuracy": out.teacher_test_accuracy,
            "student": kd,
            "baseline": out.baseline.as_ref().map(run),
            "out": a.out,
        });
        outln!("{json}");
        return Ok(());
    }
    if let Some(t) = out.teacher_test_accuracy {
        outln!("teacher               test accuracy {}", pct(t));
    }
    outln!(
        "student (α = {:<4})    test accuracy {}  ({} parameters, {} optimizer steps)",
        opts.alpha,
        pct(out.kd.test_accuracy),
        out.kd.student.param_count(),
        out.kd.report.steps
    );
    if let Some(b) = &out.baseline {
        outln!("baseline (α = 0)      test accuracy {}  ({} optimizer steps)", pct(b.test_accuracy), b.report.steps);
    }
    outln!("wrote {}", a.out.display());
    Ok(())
}

pub(super) fn sweep(a: SweepArgs, progress: &Progress) -> Result<()> {
    let base = a.distill.to_options();
    let students = match &a.students {
        Some(list) => list.split(';').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        None => vec![base.student.clone()],
    };
    let out_dir = a.distill.out.clone();
    let opts = pipeline::SweepOptions {
        base,
        temperatures: a.temperatures,
        alphas: a.alphas,
        students,
        seeds: a.seeds,
        out_dir: out_dir.clone(),
    };
    let out = pipeline::sweep(&opts, progress)?;
    let table = crate::report::sweep::markdown(&out.rows, out.best, out.baseline);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("{}: cannot create", out_dir.display()))?;
    crate::util::write_atomic(&out_dir.join("sweep.md"), table.as_bytes())?;
    let json = serde_json::json!({ "rows": out.rows, "selected": out.best, "baseline": out.baseline });
    crate::util::write_atomic(&out_dir.join("sweep.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    out.checkpoint.save(&out_dir.join("student.ckpt"))?;
    crate::report::sweep::plot(&out.rows, out.best, &out_dir.join("sweep.png"))?;
    out!("{table}");
    let (b, base) = (&out.rows[out.best], &out.rows[out.baseline]);
    outln!(
        "selected: {} T = {} α = {}: test {} (α = 0 baseline: {})",
        b.student,
        b.temperature.map_or("–".into(), |t| t.to_string()),
        b.alpha,
        pct(b.test_accuracy),
        pct(base.test_accuracy)
    );
    outln!("wrote {}/sweep.md, sweep.json, sweep.png, student.ckpt", out_dir.display());
    Ok(())
}

pub(super) fn teach(a: TeachArgs, progress: &Progress) -> Result<()> {
    let o = pipeline::TeachOptions {
        teachers: a.teacher.teachers.clone(),
        backend: a.teacher.backend,
        teacher_output: a.teacher.teacher_output.clone(),
        teacher_output_kind: a.teacher.teacher_output_kind,
        data: a.data.clone(),
        load: crate::data::LoadOptions { input_scale: a.input_scale, layout: a.layout },
        cache: a.cache.dir(),
    };
    let r = pipeline::teach(&o, progress)?;
    for (name, n, classes) in &r.splits {
        outln!("{:<9} {n} samples × {classes} classes", name.as_str());
    }
    outln!("cache {}: {} samples computed, {} already cached", r.cache.display(), r.computed_samples, r.cached_samples);
    Ok(())
}

pub(super) fn bench(a: BenchArgs, progress: &Progress) -> Result<()> {
    if a.firmware {
        return bench_firmware(&a, progress);
    }
    let Some(data) = a.data.clone() else { bail!("give --data D.npz (or --firmware)") };
    if a.student.is_none() && a.teachers.is_empty() {
        bail!("give --student SPEC (training throughput) and/or --teacher T.onnx (inference throughput)");
    }
    let teachers = crate::bench::teachers(&a.teachers, &data);
    for t in &teachers {
        t.failures.iter().for_each(|f| eprintln!("{f}"));
    }
    let specs = a.student.as_deref().unwrap_or("");
    let students = crate::bench::students(&data, specs, a.epochs, a.batch_size, a.rounds as usize, &a.python)?;
    // The machine's GEMM throughput, measured after the runs it is compared with.
    let peak = (!students.is_empty()).then(crate::bench::gemm_peak_gflops);
    if a.json {
        let mut rows: Vec<serde_json::Value> =
            teachers.iter().map(|t| serde_json::json!({ "teacher": t.teacher, "throughput": t.throughput })).collect();
        for s in &students {
            let mut row = serde_json::to_value(s)?;
            if let (Some(p), Some(o)) = (peak, row.as_object_mut()) {
                o.insert("gemm_peak_gflops".into(), p.into());
            }
            rows.push(row);
        }
        outln!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    for t in &teachers {
        outln!("{} inference (samples/s):", t.teacher.display());
        for r in t.throughput.iter().flatten() {
            outln!("  {:<6} batch {:>3}  {:>10.0}", r.backend, r.batch, r.samples_per_second);
        }
        if let [o, tr] = t.throughput.as_slice() {
            for (x, y) in o.iter().zip(tr) {
                outln!("  batch {:>3}: ort / tract = {:.2}", x.batch, x.samples_per_second / y.samples_per_second);
            }
        }
    }
    let gflops = |samples_per_second: f64, flops: f64| {
        let g = samples_per_second * flops / 1e9;
        match peak {
            Some(p) if p > 0.0 => format!("{g:>6.1} GFLOP/s, {:>4.1} % of peak", 100.0 * g / p),
            _ => format!("{g:>6.1} GFLOP/s"),
        }
    };
    for s in &students {
        outln!("{} ({} parameters), batch {}, {} epochs:", s.student, s.tinykd.parameters, a.batch_size, a.epochs);
        if s.round_ratios.len() > 1 {
            let rounds: Vec<String> = s.round_ratios.iter().map(|r| format!("{r:.2}")).collect();
            outln!("  rounds (tinykd / PyTorch): {} → median {:.2}×", rounds.join(", "), s.ratio.unwrap_or(f64::NAN));
        }
        outln!(
            "  tinykd   {:>10.0} samples/s  {}",
            s.tinykd.samples_per_second,
            gflops(s.tinykd.samples_per_second, s.flops_per_sample)
        );
        match (&s.pytorch, s.ratio) {
            (Some(t), Some(r)) => outln!(
                "  PyTorch  {:>10.0} samples/s  {}  → tinykd is {r:.2}× PyTorch",
                t.samples_per_second,
                gflops(t.samples_per_second, s.flops_per_sample)
            ),
            _ => outln!("  PyTorch  not available ({} has no torch)", a.python),
        }
    }
    if let Some(p) = peak {
        outln!("peak: {p:.1} GFLOP/s (a 1024³ SGEMM per core, both cores; a training sample is 6 × its MACs)");
    }
    Ok(())
}

/// `bench --firmware`: instructions per MAC on the boards, and the footprint images.
fn bench_firmware(a: &BenchArgs, progress: &Progress) -> Result<()> {
    if a.mlperf {
        return bench_mlperf(a, progress);
    }
    let boards: Vec<&str> = a.boards.iter().map(String::as_str).collect();
    let (ms, fp) = crate::bench::firmware::measure(&boards, a.keep.as_deref(), a.case.as_deref(), progress)?;
    if a.json {
        outln!("{}", serde_json::json!({ "kernels": ms, "footprint": fp }));
        return Ok(());
    }
    out!("{}", crate::bench::firmware::table(&ms, &boards));
    if !fp.is_empty() {
        outln!("\nsmallest Cortex-M3 image (opt-level \"s\", no I/O), image = engine + model:");
    }
    for f in &fp {
        outln!(
            "  {:<26} compiled {} B = {} B + {} B; specialized {} B = {} B + {} B; interpreted .tkd {} B = {} B + {} B",
            f.case,
            f.image_bytes,
            f.engine_bytes,
            f.model_bytes,
            f.specialized_image_bytes,
            f.specialized_engine_bytes,
            f.specialized_model_bytes,
            f.interpreted_image_bytes,
            f.interpreted_engine_bytes,
            f.interpreted_model_bytes
        );
    }
    Ok(())
}

/// `bench --firmware --mlperf`: the four MLPerf Tiny models whole on the
/// boards (an386 and an500 unless --boards names others).
fn bench_mlperf(a: &BenchArgs, progress: &Progress) -> Result<()> {
    let defaults = ["qemu-mps2-an385", "qemu-mps2-an386"];
    let boards: Vec<&str> = if a.boards.iter().map(String::as_str).eq(defaults) {
        vec!["qemu-mps2-an386", "qemu-mps2-an500"]
    } else {
        a.boards.iter().map(String::as_str).collect()
    };
    let runs = crate::bench::mlperf::run(&a.mlperf_dir, &boards, a.case.as_deref(), &a.python, progress)?;
    if runs.is_empty() {
        anyhow::bail!("no MLPerf Tiny model's name contains {:?}", a.case.as_deref().unwrap_or_default());
    }
    if a.json {
        outln!("{}", serde_json::json!({ "mlperf": runs }));
        return Ok(());
    }
    out!("{}", crate::bench::mlperf::table(&runs));
    Ok(())
}

pub(super) fn quantize(a: QuantizeArgs, progress: &Progress) -> Result<()> {
    let options = pipeline::QuantizeOptions {
        calibration: a.calibration,
        samples: a.calibration_samples,
        qat_steps: a.qat_steps,
        qat_learning_rate: a.qat_learning_rate,
        weight_scales: a.weight_scales,
        rounding: a.rounding,
    };
    let out = pipeline::quantize(&a.student, &a.data, options, a.read.options(), progress)?;
    crate::util::write_atomic(&a.out, &out.bytes)?;
    let method = match a.calibration {
        Calibration::Auto => format!("auto → {:?}", out.calibration),
        m => format!("{m:?}"),
    };
    outln!("activation ranges ({} calibration on the train split):", method.to_lowercase());
    for (i, r) in out.ranges.iter().enumerate() {
        let name = if i == 0 { "input".to_owned() } else { format!("layer {i} output") };
        let clipped = if (r.clip_min, r.clip_max) == (r.min, r.max) { "" } else { "  (clipped)" };
        outln!(
            "  {name:<16} observed [{:.4}, {:.4}]  quantized over [{:.4}, {:.4}]{clipped}",
            r.min,
            r.max,
            r.clip_min,
            r.clip_max
        );
    }
    outln!("float student  test accuracy {}", pct(out.float_accuracy));
    if let Some((r, ptq)) = &out.qat {
        outln!("int8 student, post-training      test accuracy {}", pct(*ptq));
        outln!(
            "int8 student, {} QAT steps  test accuracy {}  (agrees with float on {}; validation {} → {} at step {})",
            r.steps,
            pct(out.int8_accuracy),
            pct(out.float_agreement),
            r.start_val_accuracy.map_or("-".into(), pct),
            r.best_val_accuracy.map_or("-".into(), pct),
            r.best_step
        );
    } else {
        outln!(
            "int8 student   test accuracy {}  (agrees with float on {})",
            pct(out.int8_accuracy),
            pct(out.float_agreement)
        );
    }
    outln!("wrote {} ({} bytes)", a.out.display(), out.bytes.len());
    Ok(())
}

pub(super) fn eval(a: EvalArgs, progress: &Progress) -> Result<()> {
    let r = pipeline::evaluate_with(
        &a.model,
        &a.data,
        a.split,
        a.backend,
        a.teacher_output.as_deref(),
        a.teacher_output_kind,
        a.read.options(),
        progress,
    )?;
    if let Some(p) = &a.save_outputs {
        pipeline::save_outputs(p, &r)?;
    }
    if a.json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        match r.accuracy {
            Some(acc) => {
                outln!("{} on {} ({} samples): accuracy {}", a.model.display(), a.split.as_str(), r.n, pct(acc))
            }
            None => outln!("{} on {} ({} samples): no labels", a.model.display(), a.split.as_str(), r.n),
        }
    }
    Ok(())
}

pub(super) fn emulate(a: EmulateArgs) -> Result<()> {
    let r = &a.run;
    let build = a.build.firmware_build();
    let report = pipeline::emulate_model_with(&r.model, &r.data, r.split, &a.board, r.limit, r.read.options(), build)?;
    if a.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        print_emulation(&report);
    }
    Ok(())
}

/// Prints an emulation report as sentences.
pub fn print_emulation(r: &crate::device::EmulationReport) {
    outln!("board {}: {} samples", r.board, r.n);
    if let Some(acc) = r.accuracy {
        outln!("  device accuracy     {}", pct(acc));
    }
    outln!("  agreement with host {} (int8 logits, bit for bit)", pct(r.agreement));
    outln!("  {}/inference {:.0} ({} counter)", r.counted, r.instructions_per_inference, r.device.counter);
    outln!(
        "  flash {} B (model {} B), RAM {} B (static {} B + peak stack {} B)",
        r.flash_bytes,
        r.model_bytes,
        r.ram_bytes,
        r.static_ram_bytes,
        r.peak_stack_bytes
    );
}

pub(super) fn flash(a: FlashArgs) -> Result<()> {
    let board = crate::device::board(&a.board)?;
    let build = a.build.firmware_build();
    let r = crate::device::flash(board, &a.model, a.build_only, build)?;
    if a.json {
        outln!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    outln!(
        "board {}: firmware {} ({} B flash, model {} B; {} B static RAM)",
        r.board,
        r.elf.display(),
        r.flash_bytes,
        r.model_bytes,
        r.static_ram_bytes
    );
    if r.flashed {
        outln!("flashed; now: tinykd verify --model {} --data D.npz --port /dev/ttyACM0", a.model.display());
    }
    Ok(())
}

pub(super) fn verify(a: VerifyArgs) -> Result<()> {
    let r = &a.run;
    let report = match &a.port {
        None => {
            let Some(board) = &a.board else {
                bail!("give --port (a real board) or --board qemu-… (an emulated one)")
            };
            pipeline::emulate_model(&r.model, &r.data, r.split, board, r.limit, r.read.options())?
        }
        Some(port) => {
            let expected = a.board.as_deref().map(crate::device::board).transpose()?;
            let read = r.read.options();
            pipeline::verify_model_on_port(&r.model, &r.data, r.split, r.limit, read, port, a.baud, expected)?
        }
    };
    if a.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        print_emulation(&report);
    }
    Ok(())
}
