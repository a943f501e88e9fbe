//! The daemon's TOML config file: parsed, every key checked, every problem listed. A file that
//! loads yields a config the daemon can run with; one that does not says why.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xray_warden::config::{Config, Overrides};

fuzz_target!(|text: &str| {
    match Config::from_toml(text, &Overrides::default()) {
        Ok(config) => {
            let s = &config.systemd;
            assert!(s.reconnect_min <= s.reconnect_max);
            let now = Instant::now();
            for d in durations(&config) {
                assert!(!d.is_zero(), "a zero period would spin a loop");
                // A tokio interval adds its period to the clock at its first tick.
                let later = now.checked_add(d).and_then(|t| t.checked_add(d));
                assert!(later.is_some(), "{d:?} overflows the clock");
            }
            assert!((1..=1024).contains(&s.concurrency));
            assert!(config.users.concurrency >= 1);
            let fraction = config.users.max_remove_fraction;
            assert!(
                (0.0..=1.0).contains(&fraction),
                "max_remove_fraction {fraction}"
            );
            let fraction = config.remediation.max_orphan_fraction;
            assert!(
                (0.0..=1.0).contains(&fraction),
                "max_orphan_fraction {fraction}"
            );
            for path in [
                &config.tunnels.config_dir,
                &config.tunnels.unit_dir,
                &config.tunnels.log_dir,
                &config.users.state_dir,
            ] {
                assert!(path.is_absolute(), "{path:?}");
            }
        }
        Err(err) => {
            assert!(!err.problems.is_empty());
            let _ = err.to_string();
        }
    }
});

/// Every duration the config holds.
fn durations(c: &Config) -> [Duration; 15] {
    let (s, u, h, r) = (&c.systemd, &c.users, &c.health, &c.remediation);
    [
        c.shutdown_grace,
        s.call_timeout,
        s.reconnect_min,
        s.reconnect_max,
        s.resync_interval,
        c.sampler.interval,
        u.timeout,
        u.interval,
        u.call_timeout,
        u.traffic_interval,
        h.interval,
        h.crash_window,
        h.failed_threshold,
        r.min_orphan_age,
        r.cooldown,
    ]
}
