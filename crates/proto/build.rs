//! Compiles the .proto files with protox, a protobuf compiler written in Rust,
//! so that building tsn never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/sns.proto", "proto/tsn.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;

    // The MP3 variant is also package `csce438`: generated into its own
    // directory so that its names do not clash with the classic ones.
    let mp3 = "proto/mp3/sns.proto";
    println!("cargo:rerun-if-changed={mp3}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("mp3");
    std::fs::create_dir_all(&out)?;
    let descriptors = protox::compile([mp3], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&out)
        .compile_fds(descriptors)?;
    Ok(())
}
