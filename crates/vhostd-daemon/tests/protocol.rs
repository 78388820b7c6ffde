#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Bad front-end input is refused with an error and hurts nothing else
//! (THREATS C3, C8, C9, C10, C11, C15); lifecycle messages do what the
//! vhost-user spec says.

mod common;

use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;

use common::{eth_frame, raw_frontend, swapped, Daemon, T};
use vhost::vhost_user::VhostUserFrontend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhostd_testkit::{FakeGuest, GuestOptions, TestMemory, GPA_BASE, VA_OFFSET};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[test]
fn test_proto_vring_index_past_queues_refused_connection_survives() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    assert!(fe.set_vring_num(2, 256).is_err());
    assert!(fe.set_vring_num(63, 256).is_err());
    assert!(fe.set_vring_base(7, 0).is_err());
    // the connection still answers good requests
    fe.set_vring_num(0, 256).unwrap();
    fe.set_vring_num(1, 256).unwrap();
}

#[test]
fn test_proto_bad_ring_sizes_refused() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    for n in [0u16, 3, 100, 65535] {
        assert!(fe.set_vring_num(0, n).is_err(), "size {n}");
    }
    fe.set_vring_num(0, 32768).unwrap();
    fe.set_vring_num(0, 1).unwrap();
}

#[test]
fn test_proto_unoffered_features_refused() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    // loopback offers no checksum offload (bit 0) and never bit 63
    assert!(fe.set_features((1 << 32) | (1 << 30) | 1).is_err());
    assert!(fe.set_features((1 << 32) | (1 << 30) | (1 << 63)).is_err());
    fe.set_features((1 << 32) | (1 << 30)).unwrap();
}

#[test]
fn test_proto_loopback_offers_no_offloads_tap_spec_does() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    let f = fe.get_features().unwrap();
    assert_eq!(f & 0b11, 0, "no CSUM/GUEST_CSUM on loopback");
    assert_ne!(f & (1 << 29), 0, "EVENT_IDX offered");
    assert_ne!(f & (1 << 28), 0, "INDIRECT offered");
}

fn region(m: &TestMemory, size: u64) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        memory_size: size,
        ..m.region_info()
    }
}

#[test]
fn test_proto_memory_region_larger_than_file_refused() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    let m = TestMemory::new(1 << 20);
    assert!(fe.set_mem_table(&[region(&m, 2 << 20)]).is_err());
    assert!(d.port.report().last_error.unwrap().contains("past the end"));
    fe.set_mem_table(&[region(&m, 1 << 20)]).unwrap();
}

#[test]
fn test_proto_memory_region_fd_of_wrong_type_refused() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let r = VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: 4096,
        userspace_addr: 0x1000_0000,
        mmap_offset: 0,
        mmap_handle: a.as_raw_fd(),
    };
    assert!(fe.set_mem_table(&[r]).is_err());
}

#[test]
fn test_proto_overlapping_regions_refused() {
    let d = Daemon::loopback(1);
    let (fe, _h) = raw_frontend(&d);
    let m1 = TestMemory::new(1 << 20);
    let m2 = TestMemory::new(1 << 20);
    let mut r2 = m2.region_info();
    r2.guest_phys_addr = GPA_BASE + 4096;
    r2.userspace_addr = 0x5000_0000;
    assert!(fe.set_mem_table(&[m1.region_info(), r2]).is_err());
}

fn ring_config(desc: u64, avail: u64, used: u64) -> VringConfigData {
    VringConfigData {
        queue_max_size: 256,
        queue_size: 256,
        flags: 0,
        desc_table_addr: desc,
        used_ring_addr: used,
        avail_ring_addr: avail,
        log_addr: None,
    }
}

#[test]
fn test_proto_ring_address_outside_memory_refused_at_start() {
    let d = Daemon::loopback(1);
    let (mut fe, _h) = raw_frontend(&d);
    let m = TestMemory::new(1 << 20);
    fe.set_mem_table(&[m.region_info()]).unwrap();
    fe.set_vring_num(0, 256).unwrap();
    // used ring runs past the end of the only region
    let end = GPA_BASE + VA_OFFSET + (1 << 20);
    let base = GPA_BASE + VA_OFFSET;
    fe.set_vring_addr(0, &ring_config(base, base + 0x1000, end - 64))
        .unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    // with PROTOCOL_FEATURES a ring starts disabled: the kick alone does
    // not start it (vhost-user.rst "Starting and stopping rings")
    fe.set_vring_kick(0, &kick).unwrap();
    assert!(!d.port.running[0].load(Ordering::Relaxed));
    assert!(
        fe.set_vring_enable(0, true).is_err(),
        "the start is refused"
    );
    assert!(!d.port.running[0].load(Ordering::Relaxed));
    assert!(d.port.report().last_error.unwrap().contains("queue 0"));
    // misaligned descriptor table
    fe.set_vring_addr(0, &ring_config(base + 8, base + 0x1000, base + 0x2000))
        .unwrap_err();
}

#[test]
fn test_proto_feature_change_while_running_refused() {
    let d = Daemon::loopback(1);
    let (g, _h) = d.guest(GuestOptions::default());
    assert!(FakeGuest::wait_for(T, || d.port.running[1].load(Ordering::Relaxed)));
    let fe = &g.frontend.fe;
    fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
    assert!(fe.set_features(g.features & !(1 << 15)).is_err());
    // same features again is fine
    fe.set_features(g.features).unwrap();
}

#[test]
fn test_proto_get_vring_base_stops_ring_and_reports_next_avail() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions::default());
    for i in 0..5 {
        g.send(0, &eth_frame(100, i));
    }
    assert_eq!(g.recv_n(0, 5, T).len(), 5);
    let base = g.frontend.fe.get_vring_base(1).unwrap();
    assert_eq!(base, 5);
    assert!(!d.port.running[1].load(Ordering::Relaxed));
    // a stopped ring does not process: this frame stays
    g.send(0, &eth_frame(100, 9));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(d.stats(1).packets, 5);
}

#[test]
fn test_proto_mem_table_replaced_while_running_traffic_continues() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions::default());
    for round in 0..20u32 {
        let f = eth_frame(200, round);
        g.send(0, &f);
        if round % 4 == 0 {
            // what DPDK virtio-user does when its heap grows
            g.frontend
                .fe
                .set_mem_table(&[g.memory.region_info()])
                .unwrap();
        }
        assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)], "round {round}");
    }
    assert_eq!(d.stats(1).ring_errors, 0);
}

#[test]
fn test_proto_vring_enable_zero_pauses_ring() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions::default());
    g.frontend.fe.set_vring_enable(1, false).unwrap();
    assert!(!d.port.running[1].load(Ordering::Relaxed));
    let f = eth_frame(100, 1);
    g.send(0, &f);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(g.recv(0).is_empty());
    g.frontend.fe.set_vring_enable(1, true).unwrap();
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

#[test]
fn test_hostile_guest_avail_jump_breaks_one_queue_only() {
    let d = Daemon::loopback(2);
    let (mut g, _h) = d.guest(GuestOptions {
        queue_pairs: 2,
        ..Default::default()
    });
    g.tx[0].split().set_avail_idx(1000);
    g.kicks[1].write(1).unwrap();
    assert!(FakeGuest::wait_for(T, || d.stats(1).ring_errors == 1));
    let rep = d.port.report();
    assert_eq!(rep.state, vhostd_api::PortState::Broken);
    assert!(rep.last_error.unwrap().contains("avail index"));
    // the other queue pair keeps working
    let f = eth_frame(300, 5);
    g.send(1, &f);
    assert_eq!(g.recv_n(1, 1, T), vec![swapped(&f)]);
}

#[test]
fn test_hostile_guest_broken_port_recovers_on_reconnect() {
    let d = Daemon::loopback(1);
    {
        let (mut g, h) = d.guest(GuestOptions::default());
        g.tx[0].split().set_avail_idx(999);
        g.kicks[1].write(1).unwrap();
        assert!(FakeGuest::wait_for(T, || d.stats(1).ring_errors == 1));
        drop(g);
        h.join().unwrap();
    }
    let (mut g, _h) = d.guest(GuestOptions::default());
    assert_ne!(d.port.report().state, vhostd_api::PortState::Broken);
    let f = eth_frame(64, 1);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

#[test]
fn test_hostile_guest_bad_chain_completed_and_counted() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions::default());
    let head = 200u16;
    g.tx[0].split().push_raw(
        &[(
            head,
            vhostd_testkit::RawDesc {
                addr: 0xdead_0000_0000,
                len: 64,
                flags: 0,
                next: 0,
            },
        )],
        head,
    );
    g.kicks[1].write(1).unwrap();
    assert!(FakeGuest::wait_for(T, || d.stats(1).bad_chains == 1));
    assert!(FakeGuest::wait_for(T, || g.tx[0].split().used_idx() == 1));
    assert_eq!(g.tx[0].used(), vec![(head, 0)]);
    // and the queue still works
    let f = eth_frame(100, 2);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

/// Writes one raw vhost-user message.
fn raw_send(s: &std::os::unix::net::UnixStream, req: u32, flags: u32, payload: &[u8]) {
    use std::io::Write;
    let mut m = Vec::new();
    m.extend_from_slice(&req.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    (&*s).write_all(&m).unwrap();
}

/// Reads one raw reply: (request, flags, payload).
fn raw_recv(s: &std::os::unix::net::UnixStream) -> (u32, u32, Vec<u8>) {
    use std::io::Read;
    let mut h = [0u8; 12];
    (&*s).read_exact(&mut h).unwrap();
    let f = |i: usize| u32::from_le_bytes([h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]]);
    let mut p = vec![0u8; f(2) as usize];
    (&*s).read_exact(&mut p).unwrap();
    (f(0), f(1), p)
}

#[test]
fn test_proto_vring_enable_before_features_with_need_reply_is_acked() {
    // QEMU >= 8 does this at device reset; without an ack it waits forever.
    let d = Daemon::loopback(1);
    let (s, _h) = d.connect();
    s.set_read_timeout(Some(T)).unwrap();
    raw_send(&s, 3, 1, &[]); // SET_OWNER
    raw_send(&s, 1, 1, &[]); // GET_FEATURES
    let (req, flags, p) = raw_recv(&s);
    assert_eq!((req, flags & 0x4, p.len()), (1, 0x4, 8));
    raw_send(&s, 15, 1, &[]); // GET_PROTOCOL_FEATURES
    let (_, _, p) = raw_recv(&s);
    let pf = u64::from_le_bytes(p[..8].try_into().unwrap());
    assert_ne!(pf & 0x8, 0, "REPLY_ACK offered");
    raw_send(&s, 16, 1, &(0x8u64 | 0x1).to_le_bytes()); // SET_PROTOCOL_FEATURES
    let mut st = Vec::new();
    st.extend_from_slice(&1u32.to_le_bytes());
    st.extend_from_slice(&0u32.to_le_bytes());
    raw_send(&s, 18, 1 | 0x8, &st); // SET_VRING_ENABLE 1 0, NEED_REPLY
    let (req, flags, p) = raw_recv(&s);
    assert_eq!((req, flags & 0x4), (18, 0x4));
    assert_eq!(p, 0u64.to_le_bytes());
    // and the connection carries on through the crate's handler
    raw_send(&s, 1, 1, &[]);
    assert_eq!(raw_recv(&s).0, 1);
}

#[test]
fn test_frontend_shrinking_guest_memory_stops_rings_not_the_daemon() {
    // THREAT-MODEL "memory shrunk after mapping": the front-end truncates
    // the memfd behind the memory table while the rings run. The next
    // access to guest memory would raise SIGBUS and end the process (this
    // test process: the daemon is in-process). Instead the rings that use
    // that memory stop, counted, and a new connection works.
    let d = Daemon::loopback(1);
    {
        let (mut g, h) = d.guest(GuestOptions::default());
        let f = eth_frame(64, 3);
        g.send(0, &f);
        assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
        g.memory.file.set_len(0).unwrap();
        // wake the worker without touching guest memory ourselves
        g.kicks[1].write(1).unwrap();
        assert!(
            FakeGuest::wait_for(T, || d.stats(0).ring_errors + d.stats(1).ring_errors >= 1),
            "rings on vanished memory are stopped and counted"
        );
        assert!(vhostd_mem::fault_count() >= 1);
        // a new kick fd would revive a broken ring; on this memory it may not
        let kick = EventFd::new(0).unwrap();
        let _ = g.frontend.fe.set_vring_kick(1, &kick);
        let running = |d: &Daemon| {
            d.port
                .report()
                .queues
                .iter()
                .any(|q| q.index == 1 && q.running)
        };
        assert!(!running(&d), "no ring restarts on memory that shrank");
        drop(g);
        h.join().unwrap();
    }
    let (mut g, _h) = d.guest(GuestOptions::default());
    let f = eth_frame(200, 4);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}
