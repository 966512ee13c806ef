//! Compiles the node's .proto files with protoc (Debian `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/init.proto",
        "proto/join.proto",
        "proto/key.proto",
        "proto/verify.proto",
        "proto/recover.proto",
        "proto/management.proto",
        "proto/members.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
