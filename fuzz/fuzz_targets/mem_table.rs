//! Memory tables and address translation against a reference: whatever
//! regions the front-end describes, `check_range` must agree with what a
//! copy can actually reach, and a translated ring range must be mapped.
#![no_main]

use std::fs::File;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vhostd_mem::{GuestMem, RegionSpec};

fn file() -> Arc<File> {
    static F: OnceLock<Arc<File>> = OnceLock::new();
    F.get_or_init(|| {
        let f = memfd::MemfdOptions::default().create("fuzz").unwrap().into_file();
        f.set_len(1 << 16).unwrap();
        Arc::new(f)
    })
    .clone()
}

fn u64_at(d: &[u8], i: usize) -> u64 {
    d.get(i..i + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n % 5);
    let mut specs = Vec::new();
    for k in 0..n {
        let b = rest.get(k * 16..k * 16 + 16).unwrap_or(&[]);
        // small numbers most of the time, so tables are often valid
        let gpa = u64_at(b, 0) % (1 << 20);
        let size = (u64_at(b, 8) % (1 << 16)).max(1) & !0xfff;
        specs.push(RegionSpec {
            guest_phys_addr: gpa & !0xfff,
            memory_size: size.max(0x1000),
            user_addr: 0x7000_0000 + (k as u64) * 0x100_0000 + (gpa & 0xfff000),
            mmap_offset: (u64_at(b, 4) % 4) * 0x1000,
            file: file(),
        });
    }
    let Ok(m) = GuestMem::from_specs(specs) else { return };
    let probes = rest.get(n * 16..).unwrap_or(&[]);
    let mut buf = vec![0u8; 4096];
    for p in probes.chunks(10).take(32) {
        let addr = u64_at(p, 0) % (1 << 21);
        let len = usize::from(p.get(8).copied().unwrap_or(0)) * 17 % 4096;
        let ok = m.check_range(addr, len as u64).is_ok();
        let read = m.read(addr, &mut buf[..len]).is_ok();
        if len > 0 {
            assert_eq!(ok, read, "check_range and copy disagree at {addr:#x}+{len}");
        }
        if let Ok(gpa) = m.va_to_gpa(0x7000_0000 + addr, len as u64) {
            assert!(m.check_range(gpa, len as u64).is_ok(), "translated range not mapped");
        }
    }
});
