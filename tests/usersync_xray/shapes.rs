//! Config and document shapes only Xray has: the inherited VLESS flow (§3.3), protocol names in
//! any case (§3.6), flows and levels the loader refuses (§3.4), the `settings.users` alias
//! (§3.5), and clients without an email (§3.7).

use super::*;

/// §3.3 and §3.6: a "VLESS" inbound (upper case) with `settings.flow`. Its config client
/// without a flow is listed with the inherited flow; the old code read the inbound as no VLESS
/// at all (nobody added), and, read, would have changed a@x to flow "" every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_vless_flow_makes_no_operation_on_the_second_round() {
    let inbounds = format!(
        r#"[{{"tag": "vl", "listen": "127.0.0.1", "port": {{port}}, "protocol": "VLESS",
             "settings": {{"decryption": "none", "flow": "{VISION}",
                           "clients": [{{"email": "a@x", "id": "{A_ID}"}}]}}}}]"#
    );
    let Some(mut t) = Tunnel::start("inherited_flow", &inbounds) else {
        return;
    };
    let doc = format!(
        r#"{{"users": [{{"email": "a@x", "id": "{A_ID}"}}, {{"email": "b@x", "id": "{B_ID}"}}]}}"#
    );
    let first = t.sync(&doc).await;
    assert_eq!(
        (first.added, first.changed, first.removed),
        (1, 0, 0),
        "{first:?}"
    );
    let want = vec![user("a@x", id(A_ID), VISION), user("b@x", id(B_ID), VISION)];
    assert_eq!(t.live("vl").await, want);
    let second = t.sync(&doc).await;
    assert_eq!(
        second,
        Outcome {
            total: 2,
            ..Outcome::default()
        }
    );
    // The file inherits too: no flow spelled out, and a restarted core loads the same users.
    let file = t.file();
    let clients = file["inbounds"][0]["settings"]["clients"]
        .as_array()
        .unwrap()
        .clone();
    assert!(clients.iter().all(|c| c.get("flow").is_none()), "{file}");
    assert_config_loads(&t.config);
    t.restart();
    assert_eq!(t.live("vl").await, want);
    let third = t.sync(&doc).await;
    assert_eq!(
        third,
        Outcome {
            total: 2,
            ..Outcome::default()
        }
    );
    t.assert_alive();
}

/// §3.4: entries with a flow Xray does not load or a password level above a byte are refused
/// by the document's validation with their reason; what the warden writes passes the core's
/// own `xray run -test`. The old code sent and persisted both, and the file no longer loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_config_still_passes_the_cores_own_test() {
    let Some(mut t) = Tunnel::start(
        "config_test",
        r#"[
        {"tag": "vl", "listen": "127.0.0.1", "port": {port}, "protocol": "vless",
         "settings": {"decryption": "none", "clients": []}},
        {"tag": "tr", "listen": "127.0.0.1", "port": {port}, "protocol": "trojan",
         "settings": {"clients": []}}]"#,
    ) else {
        return;
    };
    let text = format!(
        r#"{{"users": [
        {{"email": "a@x", "id": "{A_ID}", "flow": "{VISION}", "level": 1000}},
        {{"email": "direct@x", "id": "{B_ID}", "flow": "xtls-rprx-direct"}},
        {{"email": "t@x", "password": "t", "level": 255}},
        {{"email": "high@x", "password": "h", "level": 300}}]}}"#
    );
    let doc = xray_warden::users::parse_document(text.as_bytes()).unwrap();
    let reasons: Vec<&str> = doc.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("xtls-rprx-direct") && reasons[1].contains("level 300"));
    let outcome = t.sync(&text).await;
    assert_eq!((outcome.added, outcome.failed), (2, 0), "{outcome:?}");
    assert_eq!(emails(&t.live("vl").await), ["a@x"]);
    assert_eq!(emails(&t.live("tr").await), ["t@x"]);
    assert_config_loads(&t.config);
    t.assert_alive();
}

/// §3.5: an inbound whose clients are under `settings.users` is read from there, and written
/// back there, never shadowed by a new `clients` array. (Xray 26.3.27, the pinned core, does
/// not read `users` yet, so the core lists only what the API added; later releases read it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_alias_is_read_and_written_back_in_place() {
    let Some(mut t) = Tunnel::start(
        "users_alias",
        r#"[{"tag": "tr", "listen": "127.0.0.1", "port": {port}, "protocol": "trojan",
             "settings": {"users": [{"email": "t@x", "password": "t"}]}}]"#,
    ) else {
        return;
    };
    let doc =
        r#"{"users": [{"email": "t@x", "password": "t"}, {"email": "n@x", "password": "n"}]}"#;
    let first = t.sync(doc).await;
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(emails(&t.live("tr").await), ["n@x", "t@x"]);
    let file = t.file();
    let settings = file["inbounds"][0]["settings"].as_object().unwrap();
    assert!(
        !settings.contains_key("clients"),
        "a clients array shadows users: {file}"
    );
    let written: Vec<&str> = settings["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["email"].as_str())
        .collect();
    assert_eq!(written, ["t@x", "n@x"]);
    assert_config_loads(&t.config);
    let second = t.sync(doc).await;
    assert_eq!(
        second,
        Outcome {
            total: 2,
            ..Outcome::default()
        }
    );
    t.assert_alive();
}

/// §3.7: VMess lists a config client without an email with email ""; multi-user
/// Shadowsocks-2022 lists it as `unnamed-user-N-<uuid>`. Neither is removed, nor counted by the
/// removal guard (the old code tripped it: 2 of 3 users "to remove"), round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_an_email_are_never_removed_nor_guarded() {
    let inbounds = format!(
        r#"[
        {{"tag": "vm", "listen": "127.0.0.1", "port": {{port}}, "protocol": "vmess",
         "settings": {{"clients": [{{"id": "{B_ID}"}}, {{"email": "c@x", "id": "{C_ID}"}}]}}}},
        {{"tag": "ssm", "listen": "127.0.0.1", "port": {{port}}, "protocol": "shadowsocks",
         "settings": {{"method": "2022-blake3-aes-128-gcm", "password": "{SS_KEY}",
                      "clients": [{{"password": "{SS_USER_KEY}"}}]}}}}]"#
    );
    let Some(mut t) = Tunnel::start("no_email", &inbounds) else {
        return;
    };
    let before = std::fs::read(&t.config).unwrap();
    let doc = format!(r#"{{"users": [{{"email": "c@x", "id": "{C_ID}", "inbounds": ["vm"]}}]}}"#);
    for round in 0..2 {
        let outcome = t.sync(&doc).await;
        assert_eq!(
            outcome,
            Outcome {
                total: 1,
                ..Outcome::default()
            },
            "round {round}"
        );
    }
    // The client's listing leaves out users no remove could name; the core still holds them
    // (its own CLI lists every user, the generated SS-2022 name included).
    assert_eq!(emails(&t.live("vm").await), ["c@x"]);
    assert!(t.live("ssm").await.is_empty());
    let vm = t.cli_users("vm");
    assert_eq!(vm.len(), 2, "{vm:?}");
    let ssm = t.cli_users("ssm");
    assert_eq!(ssm.len(), 1, "{ssm:?}");
    assert!(
        ssm[0]["email"]
            .as_str()
            .is_some_and(|e| e.starts_with("unnamed-user-0-")),
        "{ssm:?}"
    );
    assert_eq!(
        std::fs::read(&t.config).unwrap(),
        before,
        "the file is untouched"
    );
    t.assert_alive();
}
