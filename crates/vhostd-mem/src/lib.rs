//! Guest memory layer of vhostd.
//!
//! Owns the mappings of the memory regions a vhost-user front-end shares with
//! `SET_MEM_TABLE` / `ADD_MEM_REG`, translates guest-physical addresses (GPA)
//! and front-end virtual addresses (VA, used by `SET_VRING_ADDR`), and offers
//! bounded copies in and out of guest memory.
//!
//! It must never hand out a `&[u8]` or `&mut [u8]` into guest memory: the guest
//! may change that memory at any time, so every access is a copy through
//! `vm-memory`'s volatile accessors. Every range is checked in full (start and
//! end, across region boundaries), never only its first byte (THREATS C2).
//!
//! Region tables come from the front-end and are validated here (THREATS C4,
//! C9, C10): size 0, `gpa + size` / `user_addr + size` / `mmap_offset + size`
//! overflow, overlap in either address space, and a mapping larger than the
//! file behind the fd are all rejected before anything is mapped.
#![deny(unsafe_code)] // `sys` (a prefetch hint, the SIGBUS handler) is the exception
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod sys;

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, MmapRegion,
};

/// The most regions one table may hold (the vhost-user `VHOST_MEMORY_BAX_NREGIONS`
/// for `SET_MEM_TABLE` is 8; with `CONFIGURE_MEM_SLOTS` we advertise this many).
pub const MAX_REGIONS: usize = 32;

/// Errors of the memory layer.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// A region in a memory table is invalid (size 0, overflow, bad file).
    #[error("invalid memory region {index}: {why}")]
    InvalidRegion {
        /// Position of the region in the table.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two regions overlap in guest-physical or front-end virtual space.
    #[error("memory regions {0} and {1} overlap")]
    Overlap(usize, usize),
    /// More regions than [`MAX_REGIONS`].
    #[error("too many memory regions: {0}")]
    TooManyRegions(usize),
    /// mmap of a region failed.
    #[error("mmap of region {index} failed")]
    Map {
        /// Position of the region in the table.
        index: usize,
        /// The error from vm-memory.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The region table could not be assembled.
    #[error("bad region table")]
    Table(#[source] vm_memory::GuestRegionCollectionError),
    /// No region to remove matches.
    #[error("no region matches gpa {0:#x}")]
    NoSuchRegion(u64),
    /// A guest range is not fully backed by mapped memory.
    #[error("guest range {addr:#x}+{len} is not mapped")]
    OutOfBounds {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
    /// A front-end virtual address range does not fall inside one region.
    #[error("front-end address {0:#x}+{1} is not in any region")]
    BadVirtualAddress(u64, u64),
}

/// One region as the front-end describes it, with the fd that backs it.
#[derive(Debug)]
pub struct RegionSpec {
    /// Guest-physical start address.
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub memory_size: u64,
    /// The front-end's virtual address of the region start.
    pub user_addr: u64,
    /// Offset of the region in the file.
    pub mmap_offset: u64,
    /// The file (memfd, hugetlbfs, shm) backing the region.
    pub file: Arc<File>,
}

/// A validated region: its spec plus the shared mapping.
#[derive(Debug)]
struct Region {
    gpa: u64,
    size: u64,
    user_addr: u64,
    mmap_offset: u64,
    file: Arc<File>,
    mapping: Arc<GuestRegionMmap>,
    /// The mapping's slot in the SIGBUS registry, freed with the last copy.
    guard: Arc<FaultGuard>,
}

/// Registration of one mapping with the SIGBUS handler (see
/// [`install_fault_handler`]); unregistered on drop.
#[derive(Debug)]
struct FaultGuard(Option<usize>);

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            sys::unregister(i);
        }
    }
}

/// Installs (once per process) the handler that keeps a front-end from
/// ending the process by shrinking the file behind a mapped region: an
/// access to a page that no longer exists raises SIGBUS, and instead of
/// dying the process gets a private zero page there and counts the fault
/// ([`fault_count`], [`GuestMem::faulted`]); the owner then stops using
/// that memory. Faults outside guest mappings keep the default action.
pub fn install_fault_handler() {
    sys::install();
}

/// Guest-memory faults handled so far in this process (see
/// [`install_fault_handler`]). Cheap: one atomic load.
pub fn fault_count() -> u64 {
    sys::total_faults()
}

/// An immutable snapshot of guest memory. A new table makes a new `GuestMem`;
/// workers hold an `Arc<GuestMem>` so an old mapping lives until the last worker
/// that used it lets go (no use-after-unmap, THREATS C10/C19).
#[derive(Debug)]
pub struct GuestMem {
    regions: Vec<Region>,
    mem: GuestMemoryMmap,
}

impl Region {
    /// End of the region in guest-physical space. `gpa + size` was checked
    /// not to overflow when the region was mapped; saturating keeps that
    /// explicit.
    fn gpa_end(&self) -> u64 {
        self.gpa.saturating_add(self.size)
    }

    /// End of the region in the front-end's address space (checked likewise).
    fn va_end(&self) -> u64 {
        self.user_addr.saturating_add(self.size)
    }
}

fn checked_end(start: u64, len: u64) -> Option<u64> {
    start.checked_add(len)
}

impl GuestMem {
    /// An empty memory (no region): every access fails.
    pub fn empty() -> Self {
        GuestMem {
            regions: Vec::new(),
            mem: GuestMemoryMmap::new(),
        }
    }

    /// Validates and maps a full table (`SET_MEM_TABLE`).
    pub fn from_specs(specs: Vec<RegionSpec>) -> Result<Self, MemError> {
        if specs.len() > MAX_REGIONS {
            return Err(MemError::TooManyRegions(specs.len()));
        }
        let mut regions = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            regions.push(Self::map_region(index, spec)?);
        }
        Self::assemble(regions)
    }

    /// Whether `spec` describes a region already mapped: same addresses,
    /// size, offset and backing file (device and inode). QEMU sends the
    /// same `ADD_MEM_REG` once per queue pair (each pair is a vhost device
    /// with its own shadow table), so a duplicate is not an overlap.
    pub fn has_region(&self, spec: &RegionSpec) -> bool {
        use std::os::unix::fs::MetadataExt;
        let id = |f: &File| f.metadata().ok().map(|m| (m.dev(), m.ino()));
        let new_id = id(&spec.file);
        new_id.is_some()
            && self.regions.iter().any(|r| {
                r.gpa == spec.guest_phys_addr
                    && r.size == spec.memory_size
                    && r.user_addr == spec.user_addr
                    && r.mmap_offset == spec.mmap_offset
                    && id(&r.file) == new_id
            })
    }

    /// A new memory with one region added (`ADD_MEM_REG`); `self` is unchanged.
    pub fn with_region(&self, spec: RegionSpec) -> Result<Self, MemError> {
        if self.regions.len() >= MAX_REGIONS {
            return Err(MemError::TooManyRegions(
                self.regions.len().saturating_add(1),
            ));
        }
        let mut regions: Vec<Region> = self.regions.iter().map(Region::share).collect();
        regions.push(Self::map_region(self.regions.len(), spec)?);
        Self::assemble(regions)
    }

    /// A new memory without the region that starts at `gpa` with `size`
    /// (`REM_MEM_REG`); `self` is unchanged.
    pub fn without_region(&self, gpa: u64, size: u64) -> Result<Self, MemError> {
        let pos = self
            .regions
            .iter()
            .position(|r| r.gpa == gpa && r.size == size)
            .ok_or(MemError::NoSuchRegion(gpa))?;
        let regions = self
            .regions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pos)
            .map(|(_, r)| r.share())
            .collect();
        Self::assemble(regions)
    }

    fn map_region(index: usize, spec: RegionSpec) -> Result<Region, MemError> {
        let bad = |why| MemError::InvalidRegion { index, why };
        if spec.memory_size == 0 {
            return Err(bad("size is 0"));
        }
        checked_end(spec.guest_phys_addr, spec.memory_size).ok_or(bad("gpa + size overflows"))?;
        checked_end(spec.user_addr, spec.memory_size).ok_or(bad("user_addr + size overflows"))?;
        let file_end = checked_end(spec.mmap_offset, spec.memory_size)
            .ok_or(bad("offset + size overflows"))?;
        let size = usize::try_from(spec.memory_size).map_err(|_| bad("size too large"))?;
        // THREATS C9/C10: look at the fd before mapping it. A regular file or a
        // memfd must hold the whole range; anything else (socket, pipe,
        // directory) is refused. Hugetlbfs and memfd report their size.
        let meta = spec.file.metadata().map_err(|_| bad("fstat failed"))?;
        if !meta.file_type().is_file() {
            return Err(bad("fd is not a regular file or memfd"));
        }
        if meta.len() < file_end {
            return Err(bad("region extends past the end of its file"));
        }
        let fo = FileOffset::from_arc(spec.file.clone(), spec.mmap_offset);
        let mmap =
            MmapRegion::from_file(fo, size).map_err(|source| MemError::Map { index, source })?;
        let mapping = GuestRegionMmap::new(mmap, GuestAddress(spec.guest_phys_addr))
            .ok_or(bad("region does not fit the address space"))?;
        Ok(Region {
            gpa: spec.guest_phys_addr,
            size: spec.memory_size,
            user_addr: spec.user_addr,
            mmap_offset: spec.mmap_offset,
            file: spec.file,
            guard: Arc::new(FaultGuard(sys::register(
                mapping.as_ptr() as usize,
                usize::try_from(mapping.len()).unwrap_or(0),
            ))),
            mapping: Arc::new(mapping),
        })
    }

    fn assemble(mut regions: Vec<Region>) -> Result<Self, MemError> {
        // Overlap in either address space is refused (THREATS C10): a VA
        // overlap would make ring translation ambiguous.
        for (i, a) in regions.iter().enumerate() {
            for (j, b) in regions.iter().enumerate().skip(i.saturating_add(1)) {
                let gpa_overlap = a.gpa < b.gpa_end() && b.gpa < a.gpa_end();
                let va_overlap = a.user_addr < b.va_end() && b.user_addr < a.va_end();
                if gpa_overlap || va_overlap {
                    return Err(MemError::Overlap(i, j));
                }
            }
        }
        regions.sort_by_key(|r| r.gpa);
        let mem =
            GuestMemoryMmap::from_arc_regions(regions.iter().map(|r| r.mapping.clone()).collect())
                .map_err(MemError::Table)?;
        Ok(GuestMem { regions, mem })
    }

    /// Number of mapped regions.
    /// Whether a page of this memory vanished under its mapping (the file
    /// was shrunk) and was replaced by a zero page: what the guest shares
    /// here can no longer be trusted to be the guest's.
    pub fn faulted(&self) -> bool {
        self.regions
            .iter()
            .any(|r| r.guard.0.is_some_and(|i| sys::faults(i) > 0))
    }

    /// Number of regions.
    pub fn num_regions(&self) -> usize {
        self.regions.len()
    }

    /// Total mapped bytes.
    pub fn total_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Translates a front-end virtual address range to a guest-physical
    /// address. The whole range `[va, va+len)` must lie in one region
    /// (THREATS C11: every ring byte must translate).
    pub fn va_to_gpa(&self, va: u64, len: u64) -> Result<u64, MemError> {
        let end = checked_end(va, len).ok_or(MemError::BadVirtualAddress(va, len))?;
        self.regions
            .iter()
            .find(|r| va >= r.user_addr && end <= r.va_end())
            .map(|r| r.gpa.saturating_add(va.saturating_sub(r.user_addr)))
            .ok_or(MemError::BadVirtualAddress(va, len))
    }

    /// Checks that `[addr, addr+len)` is fully mapped (it may span regions
    /// only if they are contiguous in guest-physical space).
    pub fn check_range(&self, addr: u64, len: u64) -> Result<(), MemError> {
        let oob = || MemError::OutOfBounds { addr, len };
        let end = checked_end(addr, len).ok_or_else(oob)?;
        let mut cur = addr;
        // Walk region by region: each step must find a region holding `cur`;
        // since regions do not overlap, a gap between two regions fails here.
        while cur < end {
            let i = self
                .regions
                .binary_search_by(|r| {
                    if cur < r.gpa {
                        std::cmp::Ordering::Greater
                    } else if cur.saturating_sub(r.gpa) >= r.size {
                        std::cmp::Ordering::Less
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .map_err(|_| oob())?;
            let r = self.regions.get(i).ok_or_else(oob)?;
            cur = r.gpa_end();
        }
        Ok(())
    }

    /// The region holding all of `[addr, addr+len)` and the offset of
    /// `addr` in it. The hot path: vm-memory's generic `GuestMemory` copies
    /// walk a slice iterator per access, which cost ~75 % of a ring
    /// operation in the `ring` micro-benchmark; one region lookup and one
    /// `VolatileSlice` copy do the same work (docs/PERFORMANCE.md).
    #[inline]
    fn region_for(&self, addr: u64, len: usize) -> Option<(&GuestRegionMmap, MemoryRegionAddress)> {
        let r = match self.regions.as_slice() {
            [only] => only,
            rs => rs.get(rs.partition_point(|r| r.gpa <= addr).checked_sub(1)?)?,
        };
        let off = addr.checked_sub(r.gpa)?;
        if off.checked_add(u64::try_from(len).ok()?)? > r.size {
            return None;
        }
        Some((r.mapping.as_ref(), MemoryRegionAddress(off)))
    }

    /// Hints the CPU to bring the cache line at guest address `addr` in
    /// (nothing happens if it is not mapped). Used a burst ahead on packet
    /// data the other side's core wrote last, so the misses overlap.
    #[inline]
    pub fn prefetch(&self, addr: u64) {
        if let Some((m, off)) = self.region_for(addr, 1) {
            if let Ok(p) = m.get_host_address(off) {
                sys::prefetch(p);
            }
        }
    }

    /// Like [`prefetch`](Self::prefetch), for writing (the line is taken
    /// over, not only read).
    #[inline]
    pub fn prefetch_write(&self, addr: u64) {
        if let Some((m, off)) = self.region_for(addr, 1) {
            if let Ok(p) = m.get_host_address(off) {
                sys::prefetch_write(p);
            }
        }
    }

    /// Copies `buf.len()` bytes from guest address `addr` into `buf`.
    /// (Always inlined, like the other accessors the data path calls per
    /// frame: see [`GuestMem::load_le`].)
    #[inline(always)]
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if let Some((m, off)) = self.region_for(addr, buf.len()) {
            if let Ok(s) = m.get_slice(off, buf.len()) {
                if sys::read_guest(&s, buf) {
                    return Ok(());
                }
            }
        }
        self.read_slow(addr, buf)
    }

    /// [`GuestMem::read`] off its fast path, out of line: a range spanning
    /// regions (or not mapped at all).
    #[cold]
    #[inline(never)]
    fn read_slow(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: buf.len() as u64,
            })
    }

    /// The `N` bytes at guest address `addr`, by value: a copy of known
    /// size, which compiles to plain loads (a header compared in place
    /// needs no memmove and memcmp calls).
    #[inline]
    pub fn read_array<const N: usize>(&self, addr: u64) -> Result<[u8; N], MemError> {
        let mut b = [0u8; N];
        if let Some((m, off)) = self.region_for(addr, N) {
            if let Ok(s) = m.get_slice(off, N) {
                if sys::read_guest(&s, &mut b) {
                    return Ok(b);
                }
            }
        }
        self.read(addr, &mut b).map(|()| b)
    }

    /// Copies `buf` to guest address `addr` (always inlined, as
    /// [`GuestMem::read`]).
    #[inline(always)]
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        if let Some((m, off)) = self.region_for(addr, buf.len()) {
            if let Ok(s) = m.get_slice(off, buf.len()) {
                if sys::write_guest(&s, buf) {
                    return Ok(());
                }
            }
        }
        self.write_slow(addr, buf)
    }

    /// [`GuestMem::write`] off its fast path, out of line.
    #[cold]
    #[inline(never)]
    fn write_slow(&self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        self.mem
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Reads a little-endian `u16`.
    #[inline(always)]
    pub fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        if addr.is_multiple_of(2) {
            if let Some((m, off)) = self.region_for(addr, 2) {
                if let Ok(v) = m.load::<u16>(off, Ordering::Relaxed) {
                    return Ok(u16::from_le(v));
                }
            }
        }
        self.read_u16_slow(addr)
    }

    /// [`GuestMem::read_u16`] off its fast path, out of line.
    #[cold]
    #[inline(never)]
    fn read_u16_slow(&self, addr: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian `u64` (one relaxed load when 8-byte aligned:
    /// descriptor halves without a memmove call).
    #[inline(always)]
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        if addr.is_multiple_of(8) {
            if let Some((m, off)) = self.region_for(addr, 8) {
                if let Ok(v) = m.load::<u64>(off, Ordering::Relaxed) {
                    return Ok(u64::from_le(v));
                }
            }
        }
        self.read_u64_slow(addr)
    }

    /// [`GuestMem::read_u64`] off its fast path (unaligned, across
    /// regions, out of bounds): kept out of line, so the fast path inlines
    /// into the ring code small.
    #[cold]
    #[inline(never)]
    fn read_u64_slow(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64` (one relaxed store when aligned).
    #[inline(always)]
    pub fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemError> {
        if addr.is_multiple_of(8) {
            if let Some((m, off)) = self.region_for(addr, 8) {
                if m.store(v.to_le(), off, Ordering::Relaxed).is_ok() {
                    return Ok(());
                }
            }
        }
        self.write_u64_slow(addr, v)
    }

    /// [`GuestMem::write_u64`] off its fast path, out of line.
    #[cold]
    #[inline(never)]
    fn write_u64_slow(&self, addr: u64, v: u64) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Writes a little-endian `u16`.
    pub fn write_u16(&self, addr: u64, v: u16) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Atomic load of an aligned little-endian `T` (one region lookup on the
    /// fast path, vm-memory's generic path across regions). Always inlined
    /// (the ring code's descriptor and index loads): out of line, each call
    /// saved five registers and returned its 24-byte `Result` through the
    /// stack, seven stores per load waiting in order behind the frame
    /// copies' (see docs/PERFORMANCE.md, stores per frame).
    #[inline(always)]
    fn load_le<T: vm_memory::AtomicAccess>(
        &self,
        addr: u64,
        order: Ordering,
        from_le: fn(T) -> T,
    ) -> Result<T, MemError> {
        let len = std::mem::size_of::<T>();
        if let Some((m, off)) = self.region_for(addr, len) {
            if let Ok(v) = m.load::<T>(off, order) {
                return Ok(from_le(v));
            }
        }
        self.load_le_slow(addr, order, from_le)
    }

    /// [`GuestMem::load_le`] off its fast path, out of line.
    #[cold]
    #[inline(never)]
    fn load_le_slow<T: vm_memory::AtomicAccess>(
        &self,
        addr: u64,
        order: Ordering,
        from_le: fn(T) -> T,
    ) -> Result<T, MemError> {
        let len = std::mem::size_of::<T>();
        self.mem
            .load::<T>(GuestAddress(addr), order)
            .map(from_le)
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: len as u64,
            })
    }

    /// Atomic load of an aligned `u16` with the given ordering (ring indices).
    #[inline(always)]
    pub fn load_u16(&self, addr: u64, order: Ordering) -> Result<u16, MemError> {
        self.load_le(addr, order, u16::from_le)
    }

    /// Atomic load of an aligned little-endian `u64` with the given ordering
    /// (a packed-ring descriptor's len/id/flags half in one access).
    #[inline(always)]
    pub fn load_u64(&self, addr: u64, order: Ordering) -> Result<u64, MemError> {
        self.load_le(addr, order, u64::from_le)
    }

    /// Atomic store of an aligned `u16` with the given ordering (ring indices).
    #[inline(always)]
    pub fn store_u16(&self, addr: u64, v: u16, order: Ordering) -> Result<(), MemError> {
        if let Some((m, off)) = self.region_for(addr, 2) {
            if m.store(v.to_le(), off, order).is_ok() {
                return Ok(());
            }
        }
        self.store_u16_slow(addr, v, order)
    }

    /// [`GuestMem::store_u16`] off its fast path, out of line.
    #[cold]
    #[inline(never)]
    fn store_u16_slow(&self, addr: u64, v: u16, order: Ordering) -> Result<(), MemError> {
        self.mem
            .store(v.to_le(), GuestAddress(addr), order)
            .map_err(|_| MemError::OutOfBounds { addr, len: 2 })
    }

    /// The regions as (gpa, size, user_addr, mmap_offset), sorted by gpa.
    pub fn layout(&self) -> Vec<(u64, u64, u64, u64)> {
        self.regions
            .iter()
            .map(|r| (r.gpa, r.size, r.user_addr, r.mmap_offset))
            .collect()
    }
}

impl Region {
    fn share(&self) -> Region {
        Region {
            gpa: self.gpa,
            size: self.size,
            user_addr: self.user_addr,
            mmap_offset: self.mmap_offset,
            file: self.file.clone(),
            mapping: self.mapping.clone(),
            guard: self.guard.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
