//! Compiles the project's own message definitions in `proto/` (no services: the xray client
//! builds each gRPC method path per core) with protox, so no system `protoc` is needed.

const PROTOS: [&str; 5] = [
    "proto/typed_message.proto",
    "proto/user.proto",
    "proto/accounts.proto",
    "proto/handler.proto",
    "proto/stats.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .build_transport(false)
        // The proto comments cite the facts file; the generated code is private, so keeping
        // them out of it avoids rustdoc reading them as docs.
        .disable_comments(["."])
        .compile_fds(fds)?;
    Ok(())
}
