//! `cfg(tinykd_dsp)` on targets with the Armv7E-M DSP extension
//! (Cortex-M4/M7, thumbv7em; Armv8-M Mainline with DSP, thumbv8m.main):
//! their SXTB16 + SMLAD do two multiply-accumulates per instruction.
//! (`target_feature = "dsp"` is not visible to stable Rust code.)
///
/// `cfg(tinykd_v7m)` on Armv7-M mainline cores without it (Cortex-M3, or an
/// M4 built with `TINYKD_NO_DSP=1`): byte loads with post-increment and
/// `mla`, the inner loops written for them in assembly.
///
/// `cfg(tinykd_small)` when the profile optimises for size (opt-level "s"
/// or "z"): kernels that trade flash for speed take their compact variant.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(tinykd_dsp)");
    println!("cargo::rustc-check-cfg=cfg(tinykd_v7m)");
    println!("cargo::rustc-check-cfg=cfg(tinykd_small)");
    if matches!(std::env::var("OPT_LEVEL").as_deref(), Ok("s" | "z")) {
        println!("cargo::rustc-cfg=tinykd_small");
    }
    println!("cargo::rerun-if-env-changed=TINYKD_NO_DSP");
    let target = std::env::var("TARGET").unwrap_or_default();
    let dsp = target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main");
    // TINYKD_NO_DSP=1 builds the portable kernels only (to compare the two).
    if dsp && std::env::var_os("TINYKD_NO_DSP").is_none() {
        println!("cargo::rustc-cfg=tinykd_dsp");
    } else if dsp || target.starts_with("thumbv7m") {
        println!("cargo::rustc-cfg=tinykd_v7m");
    }
}
