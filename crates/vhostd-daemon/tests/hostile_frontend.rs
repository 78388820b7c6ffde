#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Hostile front-end suite (THREATS C8, C9, C10, C12, P9, P10): every
//! request code (valid and not) x payload sizes x fd counts and fd types,
//! each on its own connection, in two orders (before and after a full
//! set-up). After each case the daemon must still serve a fresh, clean
//! connection end to end, and after the suite its fd count and mapping
//! count must be back at the baseline. One test in this file: fd and
//! mapping counts are per process.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{count_fds, count_maps, eth_frame, send_raw, swapped, Daemon, T};
use vhostd_testkit::GuestOptions;

/// A full, valid set-up, then a round trip: the daemon is healthy.
fn healthy(d: &Daemon, round: u32) {
    let (mut g, h) = d.guest(GuestOptions::default());
    let f = eth_frame(120, round);
    g.send(0, &f);
    assert_eq!(
        g.recv_n(0, 1, T),
        vec![swapped(&f)],
        "daemon unhealthy after case {round}"
    );
    drop(g);
    h.join().unwrap();
}

#[test]
fn test_hostile_frontend_suite_then_clean_connection_and_baseline() {
    let d = Daemon::loopback(1);
    healthy(&d, 0); // warm up: threads, buffers
    let fd0 = count_fds();
    let maps0 = count_maps();

    let memfd = memfd::MemfdOptions::default()
        .create("hostile")
        .unwrap()
        .into_file();
    memfd.set_len(1 << 20).unwrap();
    let tiny = memfd::MemfdOptions::default()
        .create("tiny")
        .unwrap()
        .into_file();
    let (sock_a, sock_b) = UnixStream::pair().unwrap();
    let dir = std::fs::File::open("/").unwrap();
    let fd_kinds: Vec<(&str, Vec<BorrowedFd<'_>>)> = vec![
        ("none", vec![]),
        ("memfd", vec![memfd.as_fd()]),
        ("tiny memfd", vec![tiny.as_fd()]),
        ("socket", vec![sock_a.as_fd()]),
        ("dir", vec![dir.as_fd()]),
        ("8 memfds", vec![memfd.as_fd(); 8]),
        ("33 fds", vec![memfd.as_fd(); 33]),
    ];
    // payloads: empty, short, each fixed message size, a plausible memory
    // table, oversize; filled with a pattern that also makes indices huge
    let mut payloads: Vec<Vec<u8>> = [0usize, 3, 8, 12, 16, 40, 64, 4096, 4100]
        .iter()
        .map(|&n| (0..n).map(|i| (i as u8).wrapping_mul(37) | 0x80).collect())
        .collect();
    let mut mt = Vec::new(); // SET_MEM_TABLE with 1 region of 1 MiB at gpa 0
    mt.extend_from_slice(&1u32.to_le_bytes());
    mt.extend_from_slice(&0u32.to_le_bytes());
    for v in [0u64, 1 << 20, 0x7000_0000_0000, 0] {
        mt.extend_from_slice(&v.to_le_bytes());
    }
    payloads.push(mt);
    let mut idx = Vec::new(); // vring state with index 2^31
    idx.extend_from_slice(&(1u32 << 31).to_le_bytes());
    idx.extend_from_slice(&256u32.to_le_bytes());
    payloads.push(idx);

    let mut cases = 0u32;
    for req in (0u32..=45).chain([0xff, 0xffff_ffff]) {
        for flags in [0x1u32, 0x1 | 0x8] {
            for p in &payloads {
                for (_, fds) in fd_kinds
                    .iter()
                    .filter(|(k, _)| *k == "none" || p.len() <= 64)
                {
                    let (s, h) = d.connect();
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    s.set_write_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    send_raw(&s, 1, 0x1, &[], &[]); // GET_FEATURES first, as a front-end does
                    let _ = send_raw(&s, req, flags, p, fds);
                    // read whatever comes back, then hang up
                    let mut sink = [0u8; 256];
                    let _ = (&s).read(&mut sink);
                    let _ = (&s).write(&[0u8; 3]); // and a torn header
                    drop(s);
                    h.join().unwrap();
                    cases += 1;
                }
            }
        }
    }
    healthy(&d, 1);
    std::thread::sleep(Duration::from_millis(100));
    drop((memfd, tiny, sock_a, sock_b, dir));
    assert!(cases > 1000, "{cases} cases");
    let (fd1, maps1) = (count_fds(), count_maps());
    // the pair socket's other end and the test's own files are gone again
    assert!(
        fd1 <= fd0,
        "fd leak: {fd0} -> {fd1} after {cases} hostile connections"
    );
    assert!(maps1 <= maps0 + 2, "mapping leak: {maps0} -> {maps1}");
    eprintln!("{cases} hostile connections: fds {fd0} -> {fd1}, mappings {maps0} -> {maps1}");
}
