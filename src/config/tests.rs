use super::*;

const EXAMPLE: &str = include_str!("../../deploy/config.example.toml");

#[test]
fn empty_file_gives_the_defaults() {
    let config = Config::from_toml("", &Overrides::default()).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen.to_string(), "127.0.0.1:9550");
}

#[test]
fn example_config_equals_the_defaults() {
    let config = Config::from_toml(EXAMPLE, &Overrides::default()).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn example_config_sets_every_key() {
    // Every leaf of FileConfig is an Option: a key missing from the example shows as None.
    let (file, unknown) = FileConfig::parse(EXAMPLE).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    let debug = format!("{file:?}");
    assert!(!debug.contains("None"), "example lacks a key: {debug}");
}

#[test]
fn command_line_wins_over_the_file() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:1".parse().unwrap()),
    };
    let config = Config::from_toml("listen = \"127.0.0.1:2\"", &overrides).unwrap();
    assert_eq!(config.listen.port(), 1);
}

#[test]
fn reports_every_problem_at_once() {
    let text = r#"
        listen = "localhost"
        shutdown_grace = 5
        colour = "blue"
        [systemd]
        call_timeout = "soon"
        reconnect_min = "1m"
        reconnect_max = "1s"
        concurrency = 0
        typo = 1
        [sampler]
        interval = "0s"
        proc_root = "proc"
    "#;
    let err = Config::from_toml(text, &Overrides::default()).unwrap_err();
    let all = err.problems.join("\n");
    for needle in [
        "unknown key `colour`",
        "unknown key `systemd.typo`",
        "`listen`",
        "`shutdown_grace`",
        "`systemd.call_timeout`",
        "reconnect_min must not be larger",
        "`systemd.concurrency` = 0",
        "`sampler.interval`",
        "`sampler.proc_root`",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(err.problems.len(), 9, "{all}");
}

#[test]
fn syntax_errors_are_reported() {
    let err = Config::from_toml("listen = ", &Overrides::default()).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.to_string().starts_with("invalid configuration:"));
}

#[test]
fn bad_log_filter_is_rejected() {
    let err = Config::from_toml("log_filter = \"[[[\"", &Overrides::default()).unwrap_err();
    assert!(err.problems[0].contains("log_filter"), "{err}");
}

#[test]
fn unreadable_file_names_the_path() {
    let err = Config::load(
        Some(Path::new("/nonexistent/warden.toml")),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/warden.toml"),
        "{err}"
    );
}

#[test]
fn user_sync_settings_are_checked() {
    let text = r#"
        [tunnels]
        flavour = "sing-box"
        flavours = { "../x" = "xray", ok = "clash" }
        [users]
        source = "ftp://example.com/users.json"
        max_remove_fraction = 1.5
        token_file = "relative/token"
        [api]
        token_file = "token"
    "#;
    let err = Config::from_toml(text, &Overrides::default()).unwrap_err();
    let all = err.problems.join("\n");
    for needle in [
        "tunnels.flavour",
        "users.source",
        "max_remove_fraction",
        "users.token_file",
        "api.token_file",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn user_sources_parse() {
    let config = |source: &str| {
        Config::from_toml(
            &format!("[users]\nsource = {source:?}"),
            &Overrides::default(),
        )
        .unwrap()
        .users
        .source
    };
    assert_eq!(
        config("file:///etc/users.json"),
        Some(UserSource::File("/etc/users.json".into()))
    );
    assert_eq!(
        config("https://panel.example/users"),
        Some(UserSource::Https("https://panel.example/users".into()))
    );
    assert_eq!(config(""), None);
    assert!(Config::from_toml("[users]\nsource = \"file://rel\"", &Overrides::default()).is_err());
    assert!(
        Config::from_toml(
            "[users]\nsource = \"http://panel.example\"",
            &Overrides::default()
        )
        .is_err()
    );
}

#[test]
fn per_tunnel_flavours_win() {
    let text = "[tunnels]\nflavour = \"xray\"\nflavours = { old = \"v2ray\", auto1 = \"auto\" }\n";
    let tunnels = Config::from_toml(text, &Overrides::default())
        .unwrap()
        .tunnels;
    let id = |s: &str| crate::domain::TunnelId::new(s).unwrap();
    assert_eq!(tunnels.flavour_of(&id("old")), Some(Flavour::V2ray));
    assert_eq!(tunnels.flavour_of(&id("new")), Some(Flavour::Xray));
    assert_eq!(tunnels.flavour_of(&id("auto1")), Some(Flavour::Xray));
}

#[test]
fn per_user_online_ips_is_opt_in_and_checked() {
    let defaults = Config::from_toml("", &Overrides::default()).unwrap();
    assert!(!defaults.users.per_user_online_ips);
    let on = "[users]\nper_user_online_ips = true\nmax_user_series = 50\n";
    let config = Config::from_toml(on, &Overrides::default()).unwrap();
    assert!(config.users.per_user_online_ips);
    assert_eq!(config.users.max_user_series, 50);
    let bad = "[users]\nper_user_online_ips = \"yes\"\n";
    let err = Config::from_toml(bad, &Overrides::default()).unwrap_err();
    assert!(
        err.problems
            .join("\n")
            .contains("users.per_user_online_ips"),
        "{:?}",
        err.problems
    );
}
