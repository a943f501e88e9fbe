//! Where the warden's time goes: each step of a sync timed alone, on the files of the run.

use std::fs;
use std::path::Path;

use xray_warden::domain::{Flavour, Protocol, TunnelId};
use xray_warden::usersync::plan;
use xray_warden::{tunnelcfg, users};

use crate::live::tunnel_config;
use crate::{CONFIG_NAME, RECORD_NAME, TAG, TUNNEL};

/// Labels and [median, fastest] in ms.
pub type Costs = Vec<(String, [f64; 2])>;

/// Each step timed alone on the files of the warden's run in `dir` (writes on fresh copies).
pub fn breakdown(dir: &Path, doc_bytes: &[u8], flavour: Flavour, repeats: usize) -> Costs {
    let config = dir.join("warden/tunnel").join(CONFIG_NAME);
    let record = dir.join("warden/state").join(RECORD_NAME);
    let copies = dir.join("breakdown");
    fs::create_dir_all(&copies).expect("creating the breakdown dir");
    let id = TunnelId::new(TUNNEL).expect("a valid id");
    let doc = users::parse_document(doc_bytes).expect("the document parses");
    let synced = tunnelcfg::read(&config).expect("reading the synced config");
    let clients = &synced
        .inbounds
        .iter()
        .find(|i| i.tag == TAG)
        .expect("VLESS")
        .clients;
    let want = users::desired_for(&doc.users, &id, TAG, &Protocol::Vless, flavour);
    let record_bytes = fs::read(&record).unwrap_or_default();
    let kib = record_bytes.len() / 1024;
    let mut out = Vec::new();
    let mut time = |label: &str, runs: usize, step: &mut dyn FnMut() -> bool| {
        out.push((label.to_owned(), timed(runs, step)));
    };
    time(
        "parse the users document (per source change)",
        repeats,
        &mut || users::parse_document(doc_bytes).is_ok(),
    );
    time("tunnelcfg::read of the synced config", repeats, &mut || {
        tunnelcfg::read(&config).is_ok()
    });
    let label = format!("record file parsed as JSON ({kib} KiB) [~ Record::load]");
    time(&label, repeats, &mut || {
        serde_json::from_slice::<serde_json::Value>(&record_bytes).is_ok()
    });
    time("users::desired_for", repeats, &mut || {
        !users::desired_for(&doc.users, &id, TAG, &Protocol::Vless, flavour).is_empty()
    });
    time(
        "plan::diff (synced clients vs desired)",
        repeats,
        &mut || plan::diff(clients, &want, &Default::default()).is_empty(),
    );
    // The full sync's writes, on fresh copies: the empty config gets every client, and the
    // record's bytes are re-serialised and written atomically.
    let (empty, copy) = (tunnel_config(1, 2), copies.join(CONFIG_NAME));
    let map = std::collections::BTreeMap::from([(TAG.to_owned(), clients.clone())]);
    time(
        "tunnelcfg::persist_clients, 0 -> all clients",
        5,
        &mut || {
            fs::write(&copy, &empty).expect("writing a config copy");
            tunnelcfg::persist_clients(&copy, &map, flavour).is_ok()
        },
    );
    let label = "record: serialise + write_atomic [~ Record::save]";
    let value: serde_json::Value = serde_json::from_slice(&record_bytes).unwrap_or_default();
    time(label, 5, &mut || {
        let bytes = serde_json::to_vec_pretty(&value).expect("JSON");
        tunnelcfg::write_atomic(&copies.join(RECORD_NAME), &bytes).is_ok()
    });
    // The engine logs one line per added user; the daemon sends them to the journal.
    let label = format!("{} 'added user' log lines (fmt -> file)", clients.len());
    time(&label, 3, &mut || {
        for u in clients {
            tracing::info!(
                "added user {} to {}/{} via API (no restart)",
                u.email,
                id,
                TAG
            );
        }
        true
    });
    out
}

/// Median and fastest of `repeats` runs of `step`, in ms.
fn timed(repeats: usize, step: &mut dyn FnMut() -> bool) -> [f64; 2] {
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let started = std::time::Instant::now();
            std::hint::black_box(step());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    [times[times.len() / 2], times[0]]
}
