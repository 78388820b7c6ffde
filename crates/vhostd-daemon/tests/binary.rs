#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! The `vhostd` binary as users run it: flags, sockets, signals, client
//! mode, inherited fd, control socket.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eth_frame, swapped, T};
use vhostd_testkit::{FakeGuest, GuestOptions};

const VHOSTD: &str = env!("CARGO_BIN_EXE_vhostd");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vhostd-bin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_path(p: &Path) -> bool {
    FakeGuest::wait_for(T, || p.exists())
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(VHOSTD)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn control(path: &Path, req: &str) -> serde_json::Value {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    (&s).write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn sigterm(p: &mut Proc) -> std::process::ExitStatus {
    Command::new("kill")
        .arg("-TERM")
        .arg(p.0.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + T;
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "vhostd did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn test_bin_print_capabilities_is_json_net() {
    let out = Command::new(VHOSTD)
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "net");
}

#[test]
fn test_bin_bad_backend_exits_with_error() {
    let out = Command::new(VHOSTD)
        .args(["--socket-path", "/tmp/x.sock", "--backend", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown back-end"));
    let out = Command::new(VHOSTD)
        .args(["--socket-path", "/tmp/x.sock", "--queues", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn test_bin_listen_traffic_stats_and_sigterm_cleanup() {
    let d = tmpdir("listen");
    let (sock, ctl) = (d.join("v.sock"), d.join("ctl.sock"));
    let mut p = spawn(&[
        "--socket-path",
        sock.to_str().unwrap(),
        "--backend",
        "loopback",
        "--name",
        "vm7",
        "--control-socket",
        ctl.to_str().unwrap(),
    ]);
    assert!(wait_path(&sock) && wait_path(&ctl));
    let mut g = FakeGuest::connect(UnixStream::connect(&sock).unwrap(), GuestOptions::default());
    let f = eth_frame(400, 3);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
    let v = control(&ctl, r#"{"v":1,"cmd":"stats"}"#);
    assert_eq!(v["ok"], true);
    let port = &v["ports"][0];
    assert_eq!(port["name"], "vm7");
    assert_eq!(port["state"], "running");
    let rx0 = &port["queues"][0];
    assert_eq!(rx0["name"], "rx0");
    assert_eq!(rx0["packets"], 1);
    assert_eq!(rx0["bytes"], 400);
    for k in ["packets", "bytes", "kicks", "calls", "drops"] {
        assert!(port["queues"][1][k].is_u64(), "{k}");
    }
    let bad = control(&ctl, r#"{"v":9,"cmd":"stats"}"#);
    assert_eq!(bad["ok"], false);
    let st = sigterm(&mut p);
    assert!(st.success(), "{st:?}");
    assert!(!sock.exists(), "socket removed on SIGTERM");
    assert!(!ctl.exists(), "control socket removed on SIGTERM");
}

#[test]
fn test_bin_client_mode_reconnects() {
    let d = tmpdir("client");
    let sock = d.join("fe.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let _p = spawn(&["--socket-path", sock.to_str().unwrap(), "--client"]);
    for round in 0..2u32 {
        let (s, _) = l.accept().unwrap();
        let mut g = FakeGuest::connect(s, GuestOptions::default());
        let f = eth_frame(100, round);
        g.send(0, &f);
        assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)], "round {round}");
        // front-end goes away: vhostd must come back within ~1 s
        drop(g);
    }
}

#[test]
fn test_bin_inherited_listen_fd() {
    let d = tmpdir("fd");
    let sock = d.join("v.sock");
    // python3 makes the listening socket and execs vhostd with it inherited,
    // as QEMU's back-end program conventions describe.
    let script = "import os,socket,sys\n\
        s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n\
        os.set_inheritable(s.fileno(), True)\n\
        os.execv(sys.argv[2], [sys.argv[2], '--fd', str(s.fileno())])\n";
    let _p = Proc(
        Command::new("python3")
            .args(["-c", script, sock.to_str().unwrap(), VHOSTD])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_path(&sock));
    let s = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            UnixStream::connect(&sock).ok()
        })
        .unwrap();
    let mut g = FakeGuest::connect(s, GuestOptions::default());
    let f = eth_frame(80, 1);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn test_bin_user_group_drop_privileges_after_opening_sockets() {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:\t0\t"))
    {
        eprintln!("SKIP: dropping privileges needs root (CI runs as root)");
        return;
    }
    let d = tmpdir("user");
    // the daemon user must own the sockets' directory to remove them on exit
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    let (sock, ctl) = (d.join("v.sock"), d.join("ctl.sock"));
    let mut p = spawn(&[
        "--socket-path",
        sock.to_str().unwrap(),
        "--control-socket",
        ctl.to_str().unwrap(),
        "--user",
        "nobody",
        "--group",
        "65534",
    ]);
    assert!(wait_path(&sock) && wait_path(&ctl));
    let pid = p.0.id();
    assert!(
        FakeGuest::wait_for(T, || status_field(pid, "Uid:").starts_with("65534")),
        "uid: {}",
        status_field(pid, "Uid:")
    );
    assert!(status_field(pid, "Gid:").starts_with("65534"));
    assert_eq!(status_field(pid, "Groups:"), "65534");
    // still serves a guest, and still cleans up its sockets
    let mut g = FakeGuest::connect(UnixStream::connect(&sock).unwrap(), GuestOptions::default());
    let f = eth_frame(100, 9);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
    drop(g);
    assert!(sigterm(&mut p).success());
    assert!(!sock.exists() && !ctl.exists());
}

#[test]
fn test_bin_unknown_user_refused() {
    let out = Command::new(VHOSTD)
        .args(["--socket-path", "/tmp/x.sock", "--user", "no-such-user-zz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown user"));
}

/// `Seccomp:` (0 off, 2 filter) and `Seccomp_filters:` of one thread.
fn thread_seccomp(pid: u32, tid: &str) -> (String, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    let f = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    (f("Seccomp:"), f("Seccomp_filters:"))
}

/// Threads of `pid` by name: (tid, comm).
fn threads(pid: u32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            Some((tid, comm.trim().to_string()))
        })
        .collect()
}

#[test]
fn test_bin_seccomp_filters_every_thread_and_stacks_one_on_workers_and_shims() {
    // filters per thread: the daemon-wide two everywhere (the list, and
    // clone3 failing with ENOSYS); the connection thread (main) stacks its
    // own, which its shims inherit before they stack theirs; each worker
    // and the control threads stack one
    for (mode, on) in [("kill", true), ("log", true), ("off", false)] {
        let n = |k: u32| if on { k.to_string() } else { "0".to_string() };
        let d = tmpdir(&format!("seccomp-{mode}"));
        let sock = d.join("v.sock");
        let ctl = d.join("ctl.sock");
        let p = spawn(&[
            "--socket-path",
            sock.to_str().unwrap(),
            "--backend",
            "loopback",
            "--queues",
            "2",
            "--seccomp",
            mode,
            "--control-socket",
            ctl.to_str().unwrap(),
        ]);
        assert!(wait_path(&sock));
        let pid = p.0.id();
        // a control client, answered (by a thread under the control filter)
        let c = UnixStream::connect(&ctl).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        (&c).write_all(b"{\"v\":1,\"cmd\":\"version\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        assert!(
            line.contains("\"ok\":true"),
            "{mode}: control answer {line}"
        );
        // traffic through both pairs: both workers started a ring
        let mut g = FakeGuest::connect(
            UnixStream::connect(&sock).unwrap(),
            GuestOptions {
                queue_pairs: 2,
                ..Default::default()
            },
        );
        for qp in 0..2 {
            let f = eth_frame(100, qp as u32);
            g.send(qp, &f);
            assert_eq!(g.recv_n(qp, 1, T), vec![swapped(&f)], "{mode}");
        }
        let ts = threads(pid);
        let (mut workers, mut shims, mut main, mut control) = (0, 0, 0, 0);
        for (tid, comm) in &ts {
            let (state, got) = thread_seccomp(pid, tid);
            let want = if comm.starts_with("vhostd-port0-q") {
                workers += 1;
                n(3)
            } else if comm.starts_with("vhostd-shim") {
                shims += 1;
                n(4)
            } else if comm.starts_with("vhostd-control") || comm.starts_with("vhostd-ctl") {
                control += 1;
                n(3)
            } else if *tid == pid.to_string() {
                main += 1;
                n(3)
            } else {
                n(2)
            };
            assert_eq!(got, want, "{mode}: thread {comm} has {got} filters");
            assert_eq!(state == "2", on, "{mode}: thread {comm} Seccomp: {state}");
        }
        assert_eq!(main, 1, "{mode}: threads {ts:?}");
        assert_eq!(control, 2, "{mode}: threads {ts:?}");
        assert_eq!(workers, 2, "{mode}: threads {ts:?}");
        assert_eq!(shims, 2, "{mode}: threads {ts:?}");
        // still serving after the filters: a second connection works
        drop(g);
        let mut g =
            FakeGuest::connect(UnixStream::connect(&sock).unwrap(), GuestOptions::default());
        let f = eth_frame(200, 9);
        g.send(0, &f);
        assert_eq!(
            g.recv_n(0, 1, T),
            vec![swapped(&f)],
            "{mode}: after reconnect"
        );
    }
}

/// One raw vhost-user message with `fds` attached, all of it sent.
fn send_raw(s: &UnixStream, req: u32, flags: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) {
    assert!(
        common::send_raw(s, req, flags, payload, fds),
        "request {req} not sent"
    );
}

/// One raw reply: (request, payload).
fn recv_raw(s: &UnixStream) -> (u32, Vec<u8>) {
    let mut h = [0u8; 12];
    (&*s).read_exact(&mut h).unwrap();
    let f = |i: usize| u32::from_le_bytes(h[4 * i..4 * i + 4].try_into().unwrap());
    let mut p = vec![0u8; f(2) as usize];
    (&*s).read_exact(&mut p).unwrap();
    (f(0), p)
}

fn le(words: &[u64], widths: &[usize]) -> Vec<u8> {
    words
        .iter()
        .zip(widths)
        .flat_map(|(w, &n)| w.to_le_bytes()[..n].to_vec())
        .collect()
}

#[test]
fn test_bin_seccomp_early_enable_that_would_start_a_ring_is_left_to_the_connection_thread() {
    // The shim thread answers SET_VRING_ENABLE sent before SET_FEATURES
    // (QEMU >= 8), under a filter that allows no new fds. If that enable
    // started a ring there (dup of its eventfds), the filter would kill the
    // daemon. Set up: a ring whose start failed (its kick fd is a memfd,
    // which epoll refuses), so it wants to run and is not running; then the
    // early enable. The daemon must stay up and serve the next front-end.
    let d = tmpdir("early-enable");
    let sock = d.join("v.sock");
    let mut p = spawn(&[
        "--socket-path",
        sock.to_str().unwrap(),
        "--backend",
        "loopback",
        "--seccomp",
        "kill",
    ]);
    assert!(wait_path(&sock));
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mem = memfd::MemfdOptions::default()
        .create("early")
        .unwrap()
        .into_file();
    mem.set_len(1 << 20).unwrap();
    let ua = 0x7000_0000_0000u64;
    send_raw(&s, 3, 1, &[], &[]); // SET_OWNER
    send_raw(&s, 1, 1, &[], &[]); // GET_FEATURES
    assert_eq!(recv_raw(&s).0, 1);
    // SET_MEM_TABLE: one region of 1 MiB at gpa 0
    let mt = le(&[1, 0, 0, 1 << 20, ua, 0], &[4, 4, 8, 8, 8, 8]);
    send_raw(&s, 5, 1, &mt, &[mem.as_fd()]);
    send_raw(&s, 8, 1, &le(&[0, 256], &[4, 4]), &[]); // SET_VRING_NUM 0 256
    let addr = le(
        &[0, 0, ua, ua + 0x2000, ua + 0x1000, 0],
        &[4, 4, 8, 8, 8, 8],
    );
    send_raw(&s, 9, 1, &addr, &[]); // SET_VRING_ADDR
    send_raw(&s, 10, 1, &le(&[0, 0], &[4, 4]), &[]); // SET_VRING_BASE 0 0
    send_raw(&s, 12, 1, &0u64.to_le_bytes(), &[mem.as_fd()]); // SET_VRING_KICK: a memfd
                                                              // the shim answers the early enable on its own, possibly before the
                                                              // connection thread has handled what came before: a reply first
    send_raw(&s, 1, 1, &[], &[]);
    assert_eq!(recv_raw(&s).0, 1);
    send_raw(&s, 18, 1 | 0x8, &le(&[0, 1], &[4, 4]), &[]); // SET_VRING_ENABLE 0 1, NEED_REPLY
    let (req, _) = recv_raw(&s);
    assert_eq!(req, 18, "early enable acked");
    send_raw(&s, 1, 1, &[], &[]); // the connection thread goes on (and retries the ring)
    assert_eq!(recv_raw(&s).0, 1, "still answering");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        p.0.try_wait().unwrap().is_none(),
        "vhostd died: {:?}",
        p.0.try_wait()
    );
    drop(s);
    let mut g = FakeGuest::connect(UnixStream::connect(&sock).unwrap(), GuestOptions::default());
    let f = eth_frame(300, 5);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}
