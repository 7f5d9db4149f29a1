//! Tells the code whether the target is ARMv6-M (Cortex-M0/M0+: no DWT
//! cycle counter).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(armv6m)");
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("thumbv6m")) {
        println!("cargo::rustc-cfg=armv6m");
    }
}
