#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
use super::*;
use std::io::Write;

fn memfd(size: u64) -> Arc<File> {
    let mfd = memfd::MemfdOptions::default().create("t").unwrap();
    let f = mfd.into_file();
    f.set_len(size).unwrap();
    Arc::new(f)
}

fn spec(gpa: u64, size: u64, va: u64, file: Arc<File>) -> RegionSpec {
    RegionSpec {
        guest_phys_addr: gpa,
        memory_size: size,
        user_addr: va,
        mmap_offset: 0,
        file,
    }
}

#[test]
fn test_mem_read_write_roundtrip() {
    let m = GuestMem::from_specs(vec![spec(0x1000, 0x10000, 0x7f00_0000, memfd(0x10000))]).unwrap();
    m.write(0x2000, b"hello").unwrap();
    let mut b = [0u8; 5];
    m.read(0x2000, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    assert_eq!(m.va_to_gpa(0x7f00_0010, 16).unwrap(), 0x1010);
}

#[test]
fn test_mem_range_past_end_rejected() {
    let m = GuestMem::from_specs(vec![spec(0, 0x1000, 0, memfd(0x1000))]).unwrap();
    assert!(m.check_range(0xff0, 0x10).is_ok());
    assert!(m.check_range(0xff0, 0x11).is_err());
    assert!(m.check_range(u64::MAX - 1, 4).is_err());
    let mut b = [0u8; 0x20];
    assert!(m.read(0xff0, &mut b).is_err());
    assert!(m.va_to_gpa(0xff0, 0x11).is_err());
}

#[test]
fn test_mem_range_spanning_contiguous_regions_ok_gap_rejected() {
    let m = GuestMem::from_specs(vec![
        spec(0, 0x1000, 0x10000, memfd(0x1000)),
        spec(0x1000, 0x1000, 0x20000, memfd(0x1000)),
        spec(0x3000, 0x1000, 0x30000, memfd(0x1000)),
    ])
    .unwrap();
    assert!(m.check_range(0xf00, 0x200).is_ok());
    assert!(m.check_range(0x1f00, 0x200).is_err());
    // a copy across the two contiguous regions lands in both
    m.write(0xffe, &[1, 2, 3, 4]).unwrap();
    let mut b = [0u8; 4];
    m.read(0xffe, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4]);
    // a VA range must lie in one region
    assert!(m.va_to_gpa(0x10ff0, 0x20).is_err());
}

#[test]
fn test_mem_read_array_fast_path_across_regions_and_bounds() {
    let m = GuestMem::from_specs(vec![
        spec(0, 0x1000, 0x10000, memfd(0x1000)),
        spec(0x1000, 0x1000, 0x20000, memfd(0x1000)),
        spec(0x3000, 0x1000, 0x30000, memfd(0x1000)),
    ])
    .unwrap();
    let bytes: Vec<u8> = (1..=12).collect();
    // inside one region (the fast path) and across the contiguous two
    for addr in [0x10, 0xff4, 0xffa, 0x1ff4] {
        m.write(addr, &bytes).unwrap();
        assert_eq!(
            m.read_array::<12>(addr).unwrap().as_slice(),
            &bytes[..],
            "{addr:#x}"
        );
        assert_eq!(
            m.read_array::<10>(addr).unwrap().as_slice(),
            &bytes[..10],
            "{addr:#x}"
        );
    }
    // into the gap, past the end, wrapping: errors, never a partial read
    assert!(m.read_array::<12>(0x1ff8).is_err());
    assert!(m.read_array::<12>(0x3ffa).is_err());
    assert!(m.read_array::<12>(u64::MAX - 4).is_err());
    assert_eq!(m.read_array::<0>(0x10).unwrap(), [0u8; 0]);
}

#[test]
fn test_mem_zero_size_region_rejected() {
    let r = GuestMem::from_specs(vec![spec(0, 0, 0, memfd(0x1000))]);
    assert!(matches!(r, Err(MemError::InvalidRegion { .. })));
}

#[test]
fn test_mem_overflowing_region_rejected() {
    let r = GuestMem::from_specs(vec![spec(u64::MAX - 0xfff, 0x2000, 0, memfd(0x2000))]);
    assert!(matches!(r, Err(MemError::InvalidRegion { .. })));
    let mut s = spec(0, 0x1000, 0, memfd(0x1000));
    s.mmap_offset = u64::MAX;
    assert!(matches!(
        GuestMem::from_specs(vec![s]),
        Err(MemError::InvalidRegion { .. })
    ));
}

#[test]
fn test_mem_region_larger_than_file_rejected() {
    let r = GuestMem::from_specs(vec![spec(0, 0x2000, 0, memfd(0x1000))]);
    assert!(matches!(r, Err(MemError::InvalidRegion { .. })));
}

#[test]
fn test_mem_overlap_rejected() {
    let r = GuestMem::from_specs(vec![
        spec(0, 0x2000, 0x10000, memfd(0x2000)),
        spec(0x1000, 0x2000, 0x20000, memfd(0x2000)),
    ]);
    assert!(matches!(r, Err(MemError::Overlap(..))));
    let r = GuestMem::from_specs(vec![
        spec(0, 0x2000, 0x10000, memfd(0x2000)),
        spec(0x4000, 0x2000, 0x11000, memfd(0x2000)),
    ]);
    assert!(matches!(r, Err(MemError::Overlap(..))));
}

#[test]
fn test_mem_non_file_fd_rejected() {
    let dir = File::open("/").unwrap();
    let r = GuestMem::from_specs(vec![spec(0, 0x1000, 0, Arc::new(dir))]);
    assert!(matches!(r, Err(MemError::InvalidRegion { .. })));
}

#[test]
fn test_mem_add_remove_region() {
    let m = GuestMem::from_specs(vec![spec(0, 0x1000, 0x10000, memfd(0x1000))]).unwrap();
    let f = memfd(0x1000);
    (&*f).write_all(b"xyz").unwrap();
    let m2 = m.with_region(spec(0x8000, 0x1000, 0x80000, f)).unwrap();
    assert_eq!(m2.num_regions(), 2);
    let mut b = [0u8; 3];
    m2.read(0x8000, &mut b).unwrap();
    assert_eq!(&b, b"xyz");
    let m3 = m2.without_region(0x8000, 0x1000).unwrap();
    assert_eq!(m3.num_regions(), 1);
    assert!(m3.read(0x8000, &mut b).is_err());
    assert!(m3.without_region(0x8000, 0x1000).is_err());
}

#[test]
fn test_mem_too_many_regions_rejected() {
    let specs = (0..=MAX_REGIONS as u64)
        .map(|i| spec(i * 0x1000, 0x1000, i * 0x1000, memfd(0x1000)))
        .collect();
    assert!(matches!(
        GuestMem::from_specs(specs),
        Err(MemError::TooManyRegions(_))
    ));
}

#[test]
fn test_mem_has_region_matches_same_file_only() {
    let f = memfd(0x1000);
    let m = GuestMem::from_specs(vec![spec(0, 0x1000, 0x10000, f.clone())]).unwrap();
    assert!(m.has_region(&spec(0, 0x1000, 0x10000, f.clone())));
    assert!(!m.has_region(&spec(0, 0x1000, 0x10000, memfd(0x1000))));
    assert!(!m.has_region(&spec(0, 0x1000, 0x20000, f)));
}

#[test]
fn test_mem_fast_path_agrees_with_region_layout() {
    // three regions, two contiguous (0x0-0x2000) and one apart (0x10000):
    // in-region accesses take the fast path, spanning ones the slow path,
    // gaps and ends fail, and atomics land where plain copies do
    let m = GuestMem::from_specs(vec![
        spec(0x10000, 0x1000, 0x9000_0000, memfd(0x1000)),
        spec(0x0, 0x1000, 0x7000_0000, memfd(0x1000)),
        spec(0x1000, 0x1000, 0x8000_0000, memfd(0x1000)),
    ])
    .unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    for addr in [0x0u64, 0xfe0, 0x1800, 0x10000, 0x10fc0] {
        m.write(addr, &data).unwrap();
        let mut b = [0u8; 64];
        m.read(addr, &mut b).unwrap();
        assert_eq!(&b[..], &data[..], "at {addr:#x}");
    }
    let mut b = [0u8; 64];
    for bad in [0x1fe0u64, 0x2000, 0xffe0, 0x10fe0, u64::MAX - 8] {
        assert!(m.read(bad, &mut b).is_err(), "read at {bad:#x}");
        assert!(m.write(bad, &b).is_err(), "write at {bad:#x}");
    }
    m.store_u16(0x10002, 0xbeef, Ordering::Release).unwrap();
    assert_eq!(m.read_u16(0x10002).unwrap(), 0xbeef);
    m.write_u16(0x1ffe, 0x1234).unwrap();
    assert_eq!(m.load_u16(0x1ffe, Ordering::Acquire).unwrap(), 0x1234);
    assert!(m.load_u16(0x2000, Ordering::Acquire).is_err());
    assert!(m.load_u16(0x11000, Ordering::Acquire).is_err());
    m.write_u64(0x10ff8, 0x0123_4567_89ab_cdef).unwrap();
    assert_eq!(
        m.load_u64(0x10ff8, Ordering::Acquire).unwrap(),
        0x0123_4567_89ab_cdef
    );
    assert_eq!(m.read_u16(0x10ffe).unwrap(), 0x0123, "little-endian");
    assert!(
        m.load_u64(0x10ffc, Ordering::Acquire).is_err(),
        "past the region end"
    );
    assert!(m.load_u64(0x2000, Ordering::Acquire).is_err());
    // the out-of-line halves (read_u64_slow, write_u64_slow, store_u16_slow,
    // load_le_slow): unaligned and region-spanning u64s go through them and
    // still land where plain copies do; out of bounds fails
    for addr in [0xffcu64, 0xffb, 0x10003] {
        m.write_u64(addr, 0x1122_3344_5566_7788).unwrap();
        let mut b = [0u8; 8];
        m.read(addr, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788, "at {addr:#x}");
        assert_eq!(m.read_u64(addr).unwrap(), 0x1122_3344_5566_7788);
    }
    assert!(m.read_u64(0x1ffc).is_err(), "spanning into the gap");
    assert!(m.write_u64(0x10ffc, 1).is_err(), "past the region end");
    assert!(m.store_u16(0x2000, 1, Ordering::Release).is_err());
    // a u16 across two contiguous regions: vm-memory's generic path
    m.write_u16(0xfff, 0xa55a).unwrap();
    assert_eq!(m.read_u16(0xfff).unwrap(), 0xa55a);
}

#[test]
fn test_mem_shrunk_file_faults_are_caught_not_fatal() {
    // THREAT-MODEL "memory shrunk after mapping": the front-end truncates
    // the file behind a mapped region. Without the handler the next access
    // raises SIGBUS and this test process dies.
    install_fault_handler();
    let f = memfd(0x4000);
    let m = GuestMem::from_specs(vec![spec(0x10000, 0x4000, 0x7000_0000, f.clone())]).unwrap();
    m.write(0x10000, &[7u8; 64]).unwrap();
    m.write(0x13000, &[9u8; 64]).unwrap();
    assert!(!m.faulted());
    let before = fault_count();
    f.set_len(0).unwrap();
    // every access to a vanished page lands on a zero page instead (the
    // faulting copy itself is checked only for not failing: under valgrind
    // the instruction that faulted is not re-run after the handler)
    let mut b = [1u8; 64];
    m.read(0x10000, &mut b).unwrap();
    m.read(0x10000, &mut b).unwrap();
    assert_eq!(b, [0u8; 64]);
    assert!(m.faulted(), "the fault is attributed to this memory");
    assert!(fault_count() > before);
    let after_one = fault_count();
    m.write(0x13000, &[5u8; 8]).unwrap();
    m.write(0x13000, &[5u8; 8]).unwrap();
    assert_eq!(m.read_u64(0x13000).unwrap(), 0x0505_0505_0505_0505);
    assert!(fault_count() > after_one, "second page, second fault");
    // another memory, untouched, is not marked
    let g = GuestMem::from_specs(vec![spec(0x0, 0x1000, 0x6000_0000, memfd(0x1000))]).unwrap();
    g.write(0, &[1]).unwrap();
    assert!(!g.faulted());
    drop(m);
    drop(f);
}

#[test]
fn test_mem_shrunk_hugetlbfs_file_faults_are_caught_not_fatal() {
    // As above, over hugetlbfs (guests backed by huge pages, common in
    // NFV): a base page cannot be mapped over part of a huge page, so the
    // handler replaces the whole 2 MiB page. Needs two free 2 MiB huge
    // pages (scripts/setup.sh reserves them; VHOSTD_REQUIRE_HUGEPAGES=1,
    // set by scripts/test.sh, makes their absence a failure).
    const HUGE: u64 = 2 << 20;
    install_fault_handler();
    let made = (|| -> Result<(Arc<File>, GuestMem), String> {
        let f = memfd::MemfdOptions::default()
            .hugetlb(Some(memfd::HugetlbSize::Huge2MB))
            .create("vhostd-huge")
            .map_err(|e| e.to_string())?
            .into_file();
        f.set_len(2 * HUGE).map_err(|e| e.to_string())?;
        let f = Arc::new(f);
        // (the huge pages are reserved when the file is mapped)
        let m = GuestMem::from_specs(vec![spec(0, 2 * HUGE, 0x7000_0000, f.clone())])
            .map_err(|e| e.to_string())?;
        // (mapped without a reservation: with no free huge page the first
        // write faults, and lands on the handler's replacement)
        m.write(0x1000, &[7u8; 64]).map_err(|e| e.to_string())?;
        m.write(HUGE + 0x1000, &[9u8; 64])
            .map_err(|e| e.to_string())?;
        if m.faulted() {
            return Err("no free huge page to back it".into());
        }
        Ok((f, m))
    })();
    let (f, m) = match made {
        Ok(fm) => fm,
        Err(e) => {
            let why = format!("no 4 MiB hugetlbfs mapping here ({e}): reserve huge pages");
            assert!(
                std::env::var_os("VHOSTD_REQUIRE_HUGEPAGES").is_none(),
                "{why}"
            );
            eprintln!("SKIP: {why}");
            return;
        }
    };
    let before = fault_count();
    f.set_len(HUGE).unwrap();
    let mut b = [1u8; 64];
    m.read(HUGE + 0x1000, &mut b).unwrap();
    m.read(HUGE + 0x1000, &mut b).unwrap();
    assert_eq!(b, [0u8; 64], "the vanished huge page reads as zeros");
    assert!(m.faulted(), "the fault is attributed to this memory");
    assert!(fault_count() > before);
    // the first huge page is still the file's
    m.read(0x1000, &mut b).unwrap();
    assert_eq!(b, [7u8; 64]);
    m.write(HUGE + 0x10, &[5u8; 8]).unwrap();
    assert_eq!(m.read_u64(HUGE + 0x10).unwrap(), 0x0505_0505_0505_0505);
}

#[test]
fn test_mem_frame_copies_exact_at_every_alignment() {
    // read/write go through the memory layer's own copy loop from 256
    // bytes (sys::copy): every length around its block sizes, every guest
    // offset within a line, several host offsets; the bytes must arrive
    // exactly, and nothing either side of the range may change.
    let size = 0x40000u64;
    let m = GuestMem::from_specs(vec![spec(0, size, 0, memfd(size))]).unwrap();
    let pat = |i: usize, salt: usize| (i.wrapping_mul(131).wrapping_add(salt * 7 + 1) % 251) as u8;
    let lens = [
        255usize, 256, 257, 300, 383, 384, 385, 416, 511, 1530, 2049, 9000,
    ];
    let guard = vec![0xa5u8; 0x3000];
    for (li, &len) in lens.iter().enumerate() {
        for goff in 0..64u64 {
            for hoff in [0usize, 1, 13, 31, 32] {
                let salt = li * 64 + goff as usize + hoff;
                let gpa = 0x1000 + goff;
                // guest -> host
                m.write(gpa - 0x800, &guard[..0x800]).unwrap();
                m.write(gpa + len as u64, &guard[..0x800]).unwrap();
                let src: Vec<u8> = (0..len).map(|i| pat(i, salt)).collect();
                m.write(gpa, &src).unwrap();
                let mut host = vec![0x5au8; len + hoff + 64];
                m.read(gpa, &mut host[hoff..hoff + len]).unwrap();
                assert_eq!(
                    &host[hoff..hoff + len],
                    &src[..],
                    "read len {len} goff {goff} hoff {hoff}"
                );
                assert!(
                    host[..hoff].iter().all(|&b| b == 0x5a),
                    "read wrote before the buffer"
                );
                assert!(
                    host[hoff + len..].iter().all(|&b| b == 0x5a),
                    "read wrote past the buffer"
                );
                // nothing around the guest range changed
                let mut around = vec![0u8; 0x800];
                m.read(gpa - 0x800, &mut around).unwrap();
                assert!(around.iter().all(|&b| b == 0xa5), "write before the range");
                m.read(gpa + len as u64, &mut around).unwrap();
                assert!(around.iter().all(|&b| b == 0xa5), "write past the range");
            }
        }
    }
    // the largest frame vhostd copies (MAX_PACKET, 64 KiB + headers)
    let len = 65536 + 30;
    let src: Vec<u8> = (0..len).map(|i| pat(i, 3)).collect();
    m.write(0x10000 + 5, &src).unwrap();
    let mut host = vec![0u8; len];
    m.read(0x10000 + 5, &mut host).unwrap();
    assert_eq!(host, src);
}
