//! Quiet rounds: after a round that found nothing to do, rounds with the same document, core
//! process and config file only count the core's users (GetInboundUsersCount) instead of listing
//! and diffing every user. What a count sees is repaired at once; what it cannot see waits for
//! the next full round (forced, or at most 5 minutes later).

use super::*;
use xray_warden::domain::Protocol;

const D_ID: &str = "3f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_rounds_count_users_and_full_rounds_compare_them() {
    let Some(mut t) = Tunnel::start(
        "quiet",
        r#"[{"tag": "vl", "listen": "127.0.0.1", "port": {port}, "protocol": "vless",
             "settings": {"decryption": "none", "clients": []}}]"#,
    ) else {
        return;
    };
    let doc = format!(
        r#"{{"users": [{{"email": "a@x", "id": "{A_ID}"}}, {{"email": "b@x", "id": "{B_ID}"}}]}}"#
    );
    let full = |t: &Tunnel| {
        let labels = [("tunnel", "edge")];
        t.gauge("xray_usersync_last_full_round_timestamp_seconds", &labels)
            .expect("a full round happened")
    };
    assert_eq!(t.sync(&doc).await.added, 2);
    let steady = t.sync(&doc).await;
    assert_eq!((steady.added, steady.total), (0, 2), "{steady:?}");
    let last_full = full(&t);

    // Nothing changed: quiet, and the same answer as the last full round.
    let quiet = t.sync(&doc).await;
    assert_eq!(quiet, steady);
    assert_eq!(full(&t), last_full, "a round with nothing changed was full");

    // A credential swapped behind the warden's back, the count unchanged: a quiet round cannot
    // see it (the documented blind spot); a forced round compares in full and repairs it.
    let client = ApiClient::new(t.api, Flavour::Xray, Duration::from_secs(5));
    t.xray_api(&["rmu", "-tag", "vl", "b@x"]);
    let intruder = user("b@x", id(D_ID), "");
    client
        .add_user("vl", &Protocol::Vless, &intruder)
        .await
        .unwrap();
    assert_eq!(t.sync(&doc).await, steady);
    assert_eq!(full(&t), last_full);
    assert!(t.live("vl").await.contains(&intruder));
    let forced = t.sync_forced(&doc).await;
    assert_eq!((forced.drift, forced.changed), (1, 1), "{forced:?}");
    assert!(full(&t) > last_full, "the forced round was not full");
    assert_eq!(
        t.live("vl").await,
        vec![user("a@x", id(A_ID), ""), user("b@x", id(B_ID), "")]
    );

    // A user removed behind its back changes the count: the next round is full and repairs it.
    t.sync(&doc).await;
    let before = full(&t);
    t.xray_api(&["rmu", "-tag", "vl", "a@x"]);
    let repair = t.sync(&doc).await;
    assert_eq!((repair.drift, repair.added), (1, 1), "{repair:?}");
    assert!(full(&t) > before);
    assert_eq!(emails(&t.live("vl").await), ["a@x", "b@x"]);

    // The config file rewritten (same bytes, a new inode): full again. A new document: full.
    t.sync(&doc).await;
    let before = full(&t);
    let text = std::fs::read(&t.config).unwrap();
    let tmp = t.config.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &t.config).unwrap();
    t.sync(&doc).await;
    let after_rewrite = full(&t);
    assert!(
        after_rewrite > before,
        "a rewritten config did not make a full round"
    );
    let more = format!(
        r#"{{"users": [{{"email": "a@x", "id": "{A_ID}"}}, {{"email": "b@x", "id": "{B_ID}"}},
            {{"email": "c@x", "id": "{C_ID}"}}]}}"#
    );
    assert_eq!(t.sync(&more).await.added, 1);
    assert!(full(&t) > after_rewrite);
    t.assert_alive();
}
