use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("../../proto");
    let files: Vec<PathBuf> = ["user", "product", "cart", "order", "payment"]
        .iter()
        .map(|service| proto_root.join(format!("letsgo/{service}/v1/{service}.proto")))
        .collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("letsgo_descriptor.bin"))
        .compile_protos(&files, &[proto_root])?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}
