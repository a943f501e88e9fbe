//! A node whose warden manages tunnels through its API, set up the way the management proofs
//! share: a sandbox, the node's files in `{state}/node` (configs in `etc/`, logs in `log/`, the
//! token, the audit log), tunnels run as nobody:nogroup.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sandbox::Sandbox;
use super::warden::{Warden, http_call};

/// The bearer token every node's API takes.
pub const TOKEN: &str = "node-token-0123456789abcdef";

/// Fields drop in order: the warden stops before its sandbox halts.
pub struct Node {
    pub warden: Warden,
    /// `{state}/node`: configs in `etc/`, logs in `log/`, `token`, `audit.log`.
    pub dir: PathBuf,
    pub sandbox: Sandbox,
}

impl Node {
    /// Boots sandbox `name` and a warden on the real V2Ray, with `extra` TOML after the layout's
    /// `[api]` keys (more `[api]` keys, or sections of their own).
    pub fn boot(name: &str, extra: &str) -> Node {
        Self::start(Sandbox::boot(name), "/usr/bin/v2ray", extra)
    }

    /// [`Node::boot`] on `core`, in a sandbox named `{name}-{core}`.
    pub fn boot_on(name: &str, core: super::cores::Core, extra: &str) -> Node {
        let sandbox = Sandbox::boot(&format!("{name}-{core}"));
        Self::start(sandbox, &core.bin_str(), extra)
    }

    /// Starts the warden in `sandbox` with `core_binary` (files the test put in
    /// [`node_dir`] beforehand stay) and waits until it is ready.
    pub fn start(sandbox: Sandbox, core_binary: &str, extra: &str) -> Node {
        Self::start_under(sandbox, core_binary, extra, &[])
    }

    /// [`Node::start`] with the warden run under `wrapper` (a command that execs the rest of
    /// its command line, e.g. `prlimit --nofile=N:N --`).
    pub fn start_under(sandbox: Sandbox, core_binary: &str, extra: &str, wrapper: &[&str]) -> Node {
        let dir = node_dir(&sandbox);
        let config = format!(
            "[tunnels]\nconfig_dir = \"{d}/etc\"\nlog_dir = \"{d}/log\"\n\
             core_binary = \"{core_binary}\"\nuser = \"nobody\"\ngroup = \"nogroup\"\n\
             [api]\ntoken_file = \"{d}/token\"\naudit_log = \"{d}/audit.log\"\n{extra}",
            d = dir.display()
        );
        let program: Vec<&str> = wrapper
            .iter()
            .copied()
            .chain([super::warden::BIN])
            .collect();
        let warden = Warden::start_with(&sandbox, &config, &program, &[]);
        warden.wait_ready();
        Node {
            warden,
            dir,
            sandbox,
        }
    }

    /// One authorised API call; the answer's JSON, or its text as a JSON string.
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = http_call(self.warden.addr, method, path, Some(TOKEN), body).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// `PUT /api/v1/tunnels/{id}` with `config`.
    pub fn put(&self, id: &str, config: &str) -> (u16, Value) {
        self.call("PUT", &format!("/api/v1/tunnels/{id}"), config)
    }

    /// Everything a request could have changed: the config files, the unit files and
    /// systemd's tunnel units.
    pub fn footprint(&self) -> (Vec<String>, Vec<String>, String) {
        let units = self.sandbox.systemctl(&[
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "xray-tunnel-*",
        ]);
        (
            names(&self.dir.join("etc")),
            names(&self.sandbox.state_dir().join("units")),
            units,
        )
    }

    /// Property `prop` of tunnel `id`'s unit, empty when systemd has none.
    pub fn show(&self, id: &str, prop: &str) -> String {
        let unit = format!("xray-tunnel-{id}.service");
        self.sandbox
            .show(&unit, &[prop])
            .remove(prop)
            .unwrap_or_default()
    }
}

/// `{state}/node` of `sandbox`, created with the token file in it.
pub fn node_dir(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.state_dir().join("node");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    dir
}

/// The sorted names in `dir`; none when it does not exist.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
