//! Compiles the node's .proto files with protox, a protobuf compiler in Rust, so the build
//! needs no system `protoc` or well-known-type includes (see docs/architecture.md).

#[cfg(not(feature = "grpc"))]
fn main() {}

#[cfg(feature = "grpc")]
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
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
