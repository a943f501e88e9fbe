//! The warden's column: `Engine::sync` from zero users, then the same users again (no change,
//! both kinds of round: [`crate::nochange`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use xray_warden::domain::User;
use xray_warden::tunnelcfg;
use xray_warden::users;
use xray_warden::usersync::engine::Outcome;

use crate::adds::{Adds, held};
use crate::cores::Core;
use crate::engine::{Warden, counter};
use crate::live::{CpuMark, LiveCore, reset_peak_rss};
use crate::nochange::{NoChange, no_change};
use crate::procstat::{peak_rss_kib, rss_kib_of};
use crate::{RSS_SETTLE, TAG};

/// The warden's sync, from zero users and then with nothing to do.
pub struct WardenRun {
    pub adds: Adds,
    pub outcome: Result<Outcome, String>,
    /// `xray_usersync_operations_total{op="add",result="ok"}` after the full sync.
    pub add_ops: u64,
    pub clients_in_file: usize,
    pub invalid_in_file: usize,
    pub self_rss_before: u64,
    pub self_hwm: Option<u64>,
    pub no_change: NoChange,
}

pub async fn bench_warden(
    kind: Core,
    dir: &Path,
    doc: &Arc<users::Document>,
    repeats: usize,
) -> WardenRun {
    let mut core = LiveCore::start(kind, &dir.join("warden"));
    let mut warden = Warden::new(&core, dir.join("warden/state"));
    let core_rss_idle = core.rss_kib();
    let self_rss_before = rss_kib_of(None).unwrap_or(0);
    let hwm_reset = reset_peak_rss();
    let mark = CpuMark::now(core.pid());
    let started = Instant::now();
    let outcome = warden.sync(doc, false).await;
    let took = started.elapsed();
    let cpu = mark.since();
    let self_hwm = hwm_reset.then(peak_rss_kib).flatten();
    core.assert_alive();
    let file = tunnelcfg::read(&core.config).expect("reading the synced config");
    let inbound = file
        .inbounds
        .iter()
        .find(|i| i.tag == TAG)
        .expect("the VLESS inbound");
    tokio::time::sleep(RSS_SETTLE).await;
    let core_rss_after = core.rss_kib();
    let no_change = no_change(&mut warden, &core, doc, repeats).await;
    core.assert_alive();
    let list: Vec<User> = doc.users.iter().map(|d| d.user.clone()).collect();
    let adds = Adds {
        tried: list.len(),
        ok: outcome.as_ref().map_or(0, |o| o.added),
        held: held(&core, &list).await,
        first_error: outcome.as_ref().err().cloned(),
        took,
        cpu,
        core_rss_idle,
        core_rss_after,
        total: list.len(),
        skipped: None,
    };
    core.assert_alive();
    WardenRun {
        adds,
        outcome,
        add_ops: counter(&warden.registry, "add", "ok"),
        clients_in_file: inbound.clients.len(),
        invalid_in_file: inbound.invalid_clients.len(),
        self_rss_before,
        self_hwm,
        no_change,
    }
}
