#![allow(clippy::unwrap_used)]
//! vhostctl against an in-process daemon's control socket.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vhostd_backend::BackendSpec;
use vhostd_testkit::{FakeGuest, GuestOptions};

const VHOSTCTL: &str = env!("CARGO_BIN_EXE_vhostctl");

struct Rig {
    ctl: PathBuf,
    dir: PathBuf,
    _guest: FakeGuest,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // the socket's directory goes with the test (it was left in /tmp)
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(tag: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("vhostctl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("ctl.sock");
    let (port, workers) =
        vhostd_daemon::start_port("p0", &BackendSpec::Loopback, "pair", 1, false).unwrap();
    let l = vhostd_daemon::bind_socket(&ctl).unwrap();
    let ports = vec![port.clone()];
    std::thread::spawn(move || vhostd_daemon::control::serve(l, ports));
    let (a, b) = UnixStream::pair().unwrap();
    let (p2, w2) = (port.clone(), Arc::clone(&workers));
    std::thread::spawn(move || vhostd_daemon::server::serve_connection(&p2, &w2, b));
    let mut g = FakeGuest::connect(a, GuestOptions::default());
    let mut f = vec![0u8; 64];
    f[12] = 8;
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, Duration::from_secs(5)).len(), 1);
    Rig {
        ctl,
        dir,
        _guest: g,
    }
}

fn ctl(r: &Rig, args: &[&str]) -> (bool, String) {
    let out = Command::new(VHOSTCTL)
        .arg("--control-socket")
        .arg(&r.ctl)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn test_cli_stats_table_and_json() {
    let r = rig("stats");
    let (ok, out) = ctl(&r, &["stats"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("port p0") && out.contains("rx0") && out.contains("tx0"),
        "{out}"
    );
    let (ok, out) = ctl(&r, &["stats", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ports"][0]["queues"][0]["packets"], 1);
    let (ok, out) = ctl(&r, &["stats", "--device-stats"]);
    assert!(
        ok && out.contains("rx_packets=1") && out.contains("tx_notifications="),
        "{out}"
    );
}

#[test]
fn test_cli_coalesce_and_priority_change_settings() {
    let r = rig("coal");
    let (ok, out) = ctl(
        &r,
        &[
            "coalesce", "p0", "--queue", "0", "--usecs", "50", "--frames", "32",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("50us/32f"), "{out}");
    let (ok, out) = ctl(&r, &["coalesce", "p0", "--adaptive"]);
    assert!(ok && out.contains("adaptive"), "{out}");
    let (ok, out) = ctl(&r, &["priority", "p0", "--queue", "1", "high"]);
    assert!(ok && out.contains("high"), "{out}");
    let (ok, _) = ctl(&r, &["coalesce", "p0", "--usecs", "5"]);
    assert!(!ok, "--usecs needs --frames");
    let (ok, out) = ctl(&r, &["coalesce", "nope", "--off"]);
    assert!(!ok && out.contains("no port"), "{out}");
}

#[test]
fn test_cli_top_prints_rates_per_queue() {
    let r = rig("top");
    let (ok, out) = ctl(&r, &["top", "--interval-ms", "100", "--iterations", "2"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("pkts/s").count(), 2, "{out}");
    assert!(out.contains("rx0") && out.contains("bytes/call"), "{out}");
}
