//! Generates the gRPC server code for Terraform's plugin protocol and go-plugin's services.
//! protox (pure Rust) parses the .proto files and carries the well-known types
//! (google/protobuf/timestamp.proto), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Server only: Terraform is the client. Tests build their own client from the same
        // generated module, so the client stubs are generated too (cheap, unused in release).
        .build_server(true)
        .build_client(true)
        .compile_fds(protox::compile(
            ["proto/tfplugin6.proto", "proto/go_plugin.proto"],
            ["proto"],
        )?)?;
    Ok(())
}
