//! Changes on the live core: a credential change the core cannot take (§3.1), an inbound that
//! cannot hold users (§3.2), and drift made behind the warden's back (§4).

use super::*;

/// §3.1: the old code removed the Shadowsocks user (sent and persisted) and then had its add
/// refused by the client: the user was gone, live and on disk. Now nothing is removed that
/// cannot be added back; a Trojan change on the same core still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_change_the_core_cannot_take_keeps_the_old_user() {
    let Some(mut t) = Tunnel::start(
        "credential_change",
        r#"[
        {"tag": "ss", "listen": "127.0.0.1", "port": {port}, "protocol": "shadowsocks",
         "settings": {"clients": [{"email": "s@x", "password": "old-ss", "method": "aes-128-gcm"}]}},
        {"tag": "tr", "listen": "127.0.0.1", "port": {port}, "protocol": "trojan",
         "settings": {"clients": [{"email": "t@x", "password": "old-tr"}, {"email": "u@x", "password": "u"},
           {"email": "v@x", "password": "v"}, {"email": "w@x", "password": "w"}]}},
        {"tag": "ss22", "listen": "127.0.0.1", "port": {port}, "protocol": "shadowsocks",
         "settings": {"method": "2022-blake3-aes-128-gcm", "password": "SERVER_KEY",
           "clients": [{"email": "k@x", "password": "OLD_KEY"}]}}]"#
            .replace("SERVER_KEY", SS_KEY)
            .replace("OLD_KEY", SS_USER_KEY)
            .as_str(),
    ) else {
        return;
    };
    // A Shadowsocks-2022 key change goes through like the Trojan one: the client checks the
    // inbound holds the email before each add there, so the trial add changes nothing.
    let doc = r#"{"users": [
        {"email": "s@x", "password": "new-ss", "inbounds": ["ss"]},
        {"email": "t@x", "password": "new-tr", "inbounds": ["tr"]},
        {"email": "u@x", "password": "u", "inbounds": ["tr"]},
        {"email": "v@x", "password": "v", "inbounds": ["tr"]},
        {"email": "w@x", "password": "w", "inbounds": ["tr"]},
        {"email": "k@x", "password": "NEW_KEY", "inbounds": ["ss22"]}]}"#
        .replace("NEW_KEY", SS_NEW_USER_KEY);
    let doc = doc.as_str();
    let first = t.sync(doc).await;
    assert_eq!(
        (first.removed, first.changed, first.kept),
        (0, 2, 1),
        "{first:?}"
    );
    assert_eq!(
        t.live("ss22").await,
        vec![user("k@x", pw(SS_NEW_USER_KEY), "")]
    );
    // Ground truth: the core still lets s@x in with the old password, t@x has the new one.
    assert_eq!(t.live("ss").await, vec![user("s@x", pw("old-ss"), "")]);
    let trojan = t.live("tr").await;
    assert_eq!(trojan[0], user("t@x", pw("new-tr"), ""));
    // On disk too: the file keeps s@x's client as it was.
    let file = t.file();
    let ss = &file["inbounds"][0]["settings"]["clients"];
    assert_eq!(ss.as_array().unwrap().len(), 1, "{file}");
    assert_eq!(
        (ss[0]["email"].as_str(), ss[0]["password"].as_str()),
        (Some("s@x"), Some("old-ss"))
    );
    assert_eq!(
        file["inbounds"][1]["settings"]["clients"][0]["password"],
        "new-tr"
    );
    // Every round after says the same, and still removes nobody.
    let again = t.sync(doc).await;
    assert_eq!(
        (again.removed, again.changed, again.kept),
        (0, 0, 1),
        "{again:?}"
    );
    assert_eq!(t.live("ss").await.len(), 1);
    t.assert_alive();
}

/// §3.2: GetInboundUsers on a single-user Shadowsocks-2022 inbound answers "proxy is not a
/// UserManager"; the old code failed the whole tunnel's sync on it. Now the inbound is skipped
/// and said so, and the VLESS inbound beside it syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_that_cannot_hold_users_is_skipped_and_the_rest_syncs() {
    let inbounds = format!(
        r#"[
        {{"tag": "ss1", "listen": "127.0.0.1", "port": {{port}}, "protocol": "shadowsocks",
         "settings": {{"method": "2022-blake3-aes-128-gcm", "password": "{SS_KEY}"}}}},
        {{"tag": "vl", "listen": "127.0.0.1", "port": {{port}}, "protocol": "vless",
         "settings": {{"decryption": "none", "clients": []}}}}]"#
    );
    let Some(mut t) = Tunnel::start("cannot_hold", &inbounds) else {
        return;
    };
    let doc = format!(
        r#"{{"users": [{{"email": "a@x", "id": "{A_ID}"}}, {{"email": "p@x", "password": "p"}}]}}"#
    );
    for _ in 0..2 {
        let outcome = t.sync(&doc).await;
        assert_eq!(outcome.cannot_hold, ["ss1"], "{outcome:?}");
        assert_eq!(outcome.failed, 0, "{outcome:?}");
    }
    assert_eq!(t.live("vl").await, vec![user("a@x", id(A_ID), "")]);
    let labels = [("tunnel", "edge"), ("inbound", "ss1")];
    assert_eq!(
        t.gauge("xray_usersync_inbound_cannot_hold_users", &labels),
        Some(1.0)
    );
    t.assert_alive();
}

/// §4: a user removed behind the warden's back (`xray api rmu`) is drift: the next round
/// reports it, in the outcome and in xray_usersync_drift_users, and repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_the_wardens_back_is_counted_and_repaired() {
    let Some(mut t) = Tunnel::start(
        "drift",
        r#"[{"tag": "vl", "listen": "127.0.0.1", "port": {port}, "protocol": "vless",
             "settings": {"decryption": "none", "clients": []}}]"#,
    ) else {
        return;
    };
    let doc = format!(
        r#"{{"users": [{{"email": "a@x", "id": "{A_ID}"}}, {{"email": "b@x", "id": "{B_ID}"}}]}}"#
    );
    let labels = [("tunnel", "edge"), ("inbound", "vl")];
    let first = t.sync(&doc).await;
    assert_eq!(first.added, 2, "{first:?}");
    let steady = t.sync(&doc).await;
    assert_eq!(steady.drift, 0, "{steady:?}");
    assert_eq!(t.gauge("xray_usersync_drift_users", &labels), Some(0.0));

    let removed = t.xray_api(&["rmu", "-tag", "vl", "a@x"]);
    assert!(removed.contains("Removed 1 user"), "{removed}");
    assert_eq!(emails(&t.live("vl").await), ["b@x"]);

    let repair = t.sync(&doc).await;
    assert_eq!((repair.drift, repair.added), (1, 1), "{repair:?}");
    assert_eq!(t.gauge("xray_usersync_drift_users", &labels), Some(1.0));
    assert_eq!(emails(&t.live("vl").await), ["a@x", "b@x"]);
    let after = t.sync(&doc).await;
    assert_eq!(after.drift, 0, "{after:?}");
    assert_eq!(t.gauge("xray_usersync_drift_users", &labels), Some(0.0));
    t.assert_alive();
}
