//! Compiles the small C++ shim that reads a CTranslate2 `StorageView` on the host (ct2rs has no
//! accessor for it); it links against the CTranslate2 library ct2rs builds.

fn main() {
    println!("cargo:rerun-if-changed=ct2-shim");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include("ct2-shim/include")
        .file("ct2-shim/shim.cc")
        .warnings(false)
        .compile("aldea_ct2_shim");
}
