//! Two jobs at build time:
//!
//! - Compiles the project's own message definitions in `proto/` (no services: the xray client
//!   builds each gRPC method path per core) with protox, so no system `protoc` is needed.
//! - Generates the man pages (one per command, gzipped as Debian wants them) and the bash, zsh and
//!   fish completions from the clap definition in src/cli.rs, so they cannot drift from the flags.
//!   They are written to OUT_DIR and then copied to `<target dir>/<profile>/xray-warden-assets/`,
//!   a path without a build hash: cargo-deb names build products by `target/release/...` and has
//!   no way to find an OUT_DIR (cargo issue 5457), so the Debian package's assets point there.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use flate2::Compression;
use flate2::write::GzEncoder;

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;

const PROTOS: [&str; 5] = [
    "proto/typed_message.proto",
    "proto/user.proto",
    "proto/accounts.proto",
    "proto/handler.proto",
    "proto/stats.proto",
];

/// The hash-free directory under the profile's directory that the package's assets name.
const ASSETS_DIR: &str = "xray-warden-assets";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=src/cli.rs");
    compile_protos()?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?);
    let assets = out_dir.join(ASSETS_DIR);
    generate_cli_assets(&assets)?;
    match profile_dir(&out_dir) {
        Some(profile) => copy_dir(&assets, &profile.join(ASSETS_DIR))?,
        None => println!(
            "cargo:warning=OUT_DIR {} is not <target>/<profile>/build/<pkg>/out: the man pages and completions stay there",
            out_dir.display()
        ),
    }
    Ok(())
}

fn compile_protos() -> Result<(), Box<dyn Error>> {
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

/// `man/*.1.gz` (xray-warden.1 and one page per subcommand) and `completions/` for each shell.
fn generate_cli_assets(dir: &Path) -> Result<(), Box<dyn Error>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    // Start empty, so a page of a removed subcommand does not linger.
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;

    let cmd = cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for entry in fs::read_dir(&man)? {
        gzip_in_place(&entry?.path())?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "xray-warden", &completions)?;
    }
    Ok(())
}

/// Replaces FILE by FILE.gz, compressed at the highest level (what Debian policy asks of man
/// pages), with no name or time in the header so the output is reproducible.
fn gzip_in_place(file: &Path) -> Result<(), Box<dyn Error>> {
    let data = fs::read(file)?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&data)?;
    let mut name = file.as_os_str().to_owned();
    name.push(".gz");
    fs::write(PathBuf::from(name), gz.finish()?)?;
    fs::remove_file(file)?;
    Ok(())
}

/// `<target>/<profile>` (or `<target>/<triple>/<profile>`) from `<...>/<profile>/build/<pkg>/out`.
fn profile_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    (build.file_name()? == "build").then(|| build.parent().map(Path::to_path_buf))?
}

/// Replaces DEST by a copy of the flat two-level tree SRC.
fn copy_dir(src: &Path, dest: &Path) -> Result<(), Box<dyn Error>> {
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    for sub in fs::read_dir(src)? {
        let sub = sub?.path();
        let target = dest.join(sub.file_name().ok_or("a named entry")?);
        fs::create_dir_all(&target)?;
        for file in fs::read_dir(&sub)? {
            let file = file?.path();
            fs::copy(&file, target.join(file.file_name().ok_or("a named file")?))?;
        }
    }
    Ok(())
}
