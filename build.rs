// librdkafka's SSPI code (Windows) needs Secur32, which rdkafka-sys does not link for MinGW.
// A link argument (not `rustc-link-lib`) puts it after librdkafka on the linker line.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        println!("cargo:rustc-link-arg=-lsecur32");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
