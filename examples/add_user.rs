//! Adds ONE VLESS user to a V2Ray core's inbound through the gRPC API, then exits: what a
//! per-user CLI call costs (process start, runtime, connection, the inbound check, the add).
//! The usersync benchmark spawns it once per user as its baseline C on V2Ray 4.34, which has no
//! `api adu`; on Xray-core that baseline is the core's own `xray api adu`, one process per user.
//!
//! `add_user ADDR TAG EMAIL UUID`, e.g. `add_user 127.0.0.1:10085 vless-in a@x <uuid>`.
//! Exit status: 0 added, 1 the core refused or could not be reached, 2 bad arguments.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use xray_warden::domain::{Credential, Flavour, Protocol, User, canonical_uuid};
use xray_warden::xray::ApiClient;

const TIMEOUT: Duration = Duration::from_secs(5);
const USAGE: &str = "usage: add_user ADDR TAG EMAIL UUID";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, tag, email, id] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("{addr:?} is not an address like 127.0.0.1:10085\n{USAGE}");
        return ExitCode::from(2);
    };
    let Some(id) = canonical_uuid(id) else {
        eprintln!("{id:?} is not a UUID\n{USAGE}");
        return ExitCode::from(2);
    };
    let user = User {
        email: email.clone(),
        credential: Credential::Id(id),
        flow: String::new(),
        level: 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    // The client's lazy channel needs the runtime's context to be built.
    let _entered = runtime.enter();
    let client = ApiClient::new(addr, Flavour::V2ray, TIMEOUT);
    match runtime.block_on(client.add_user(tag, &Protocol::Vless, &user)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("add_user {email}: {err}");
            ExitCode::FAILURE
        }
    }
}
