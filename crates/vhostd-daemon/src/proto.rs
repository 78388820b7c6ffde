//! vhost-user protocol state for one connection (vhost-user.rst, "Back-end
//! message types"). The rust-vmm `vhost` crate parses and sizes every
//! message and checks fd counts; this handler validates what the messages
//! mean (indices, sizes, addresses, order) and drives the workers.
//!
//! Ring lifecycle, per vhost-user.rst "Starting and stopping rings": a ring
//! runs when it has a kick fd (SET_VRING_KICK), is enabled (SET_VRING_ENABLE,
//! or implicitly without VHOST_USER_F_PROTOCOL_FEATURES), and memory, size
//! and addresses are set. GET_VRING_BASE stops it. Any change to what a
//! running ring depends on (memory table, addresses, call fd) stops it,
//! applies the change and starts it again at the same avail index: rings
//! are never touched by two threads, and old memory maps are released only
//! after the worker has let go of them (THREATS C10, C19).

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use vhostd_mem::{GuestMem, RegionSpec, MAX_REGIONS};
use vhostd_net::features::{offered, CTRL_FEATURES, VHOST_USER_F_PROTOCOL_FEATURES};
use vhostd_net::NetConfig;
use vhostd_virtq::{Queue, QueueConfig, MAX_QUEUE_SIZE};

use crate::port::Port;
use crate::warn_rl;
use crate::worker::{Dir, RingStart, WorkerHandle};

/// Protocol features vhostd implements (REPLY_ACK is added by the crate).
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
}

/// Feature bit the front-end may toggle while rings run (dirty logging).
const VHOST_F_LOG_ALL: u64 = 1 << 26;

#[derive(Debug, Default)]
struct Vring {
    size: u16,
    desc_va: u64,
    avail_va: u64,
    used_va: u64,
    addr_set: bool,
    base: u32,
    kick: Option<File>,
    /// SET_VRING_KICK arrived with NOFD: the front-end polls.
    kick_nofd: bool,
    call: Option<Arc<File>>,
    err: Option<Arc<File>>,
    /// SET_VRING_ENABLE state. With VHOST_USER_F_PROTOCOL_FEATURES a ring
    /// starts disabled and waits for SET_VRING_ENABLE 1 (without it, rings
    /// run as soon as they are kicked: see `sync_ring`). QEMU sends its
    /// enables before SET_FEATURES, which the vhost crate would refuse; the
    /// shim (quirks.rs) hands those to `set_vring_enable_early` instead.
    enabled: bool,
    started: bool,
    running: bool,
    /// An early enable (shim thread) wants this ring running; the
    /// connection thread starts it after its next request.
    deferred: bool,
}

/// Handler state for one front-end connection.
#[derive(Debug)]
pub struct PortHandler {
    port: Arc<Port>,
    workers: Arc<Vec<WorkerHandle>>,
    offered: u64,
    acked: u64,
    features_set: bool,
    protocol: u64,
    mem: Option<Arc<GuestMem>>,
    vrings: Vec<Vring>,
}

fn invalid(why: &'static str) -> VuError {
    VuError::InvalidOperation(why)
}

impl PortHandler {
    /// A fresh handler (a new connection starts from scratch).
    pub fn new(port: Arc<Port>, workers: Arc<Vec<WorkerHandle>>) -> Self {
        let n = port.counters.len();
        let ctrl = if port.ctrl_vq { CTRL_FEATURES } else { 0 };
        PortHandler {
            offered: offered(port.backend.supports_offloads()) | ctrl,
            port,
            workers,
            acked: 0,
            features_set: false,
            protocol: 0,
            mem: None,
            vrings: (0..n).map(|_| Vring::default()).collect(),
        }
    }

    fn proto_acked(&self) -> bool {
        self.acked & VHOST_USER_F_PROTOCOL_FEATURES != 0
    }

    /// Validates a vring index from the wire (u32, or u8 for fd messages):
    /// never truncate before checking (THREATS C8, CVE-2020-10723).
    fn vring_index(&self, index: u32) -> VuResult<usize> {
        let i = usize::try_from(index).map_err(|_| VuError::InvalidParam)?;
        if i >= self.vrings.len() {
            warn_rl!("port {}: vring index {index} out of range", self.port.name);
            return Err(VuError::InvalidParam);
        }
        Ok(i)
    }

    fn worker(&self, vq: usize) -> Option<(&WorkerHandle, Dir)> {
        if vq == self.port.data_queues() {
            // the control queue lives on the first worker
            return self.workers.first().map(|w| (w, Dir::Ctrl));
        }
        let dir = if vq.is_multiple_of(2) {
            Dir::Rx
        } else {
            Dir::Tx
        };
        self.workers.get(vq / 2).map(|w| (w, dir))
    }

    fn stop_ring(&mut self, vq: usize) {
        let Some(v) = self.vrings.get(vq) else { return };
        if !v.running {
            return;
        }
        let base = self.worker(vq).and_then(|(w, d)| w.stop(d));
        if let Some(v) = self.vrings.get_mut(vq) {
            if let Some(b) = base {
                v.base = b;
            }
            v.running = false;
        }
    }

    /// Whether ring `vq` should be running now.
    fn wants_running(&self, vq: usize) -> bool {
        self.vrings.get(vq).is_some_and(|v| {
            let enabled = v.enabled || !self.proto_acked();
            v.started && enabled && v.addr_set && v.size > 0 && self.mem.is_some()
        })
    }

    /// Starts or stops ring `vq` so that it runs exactly when it should.
    fn sync_ring(&mut self, vq: usize) -> VuResult<()> {
        let want = self.wants_running(vq);
        let Some(v) = self.vrings.get_mut(vq) else {
            return Err(VuError::InvalidParam);
        };
        v.deferred = false;
        if !want {
            self.stop_ring(vq);
            return Ok(());
        }
        if v.running {
            return Ok(());
        }
        let mem = self.mem.clone().ok_or(invalid("no memory table"))?;
        if mem.faulted() {
            // the front-end shrank this table's memory: no ring runs on it
            // again until a new table comes (THREAT-MODEL)
            self.port.set_error(format!(
                "queue {vq}: guest memory shrank under its mapping; a new memory table is needed"
            ));
            warn_rl!(
                "port {} queue {vq}: not started: guest memory shrank under its mapping",
                self.port.name
            );
            return Err(VuError::InvalidParam);
        }
        let cfg = NetConfig::from_features(self.acked);
        let (dl, al, ul) = if cfg.packed {
            vhostd_virtq::packed_ring_sizes(v.size)
        } else {
            vhostd_virtq::ring_sizes(v.size)
        };
        // vhost-user ring addresses are front-end virtual addresses; each
        // ring must translate in full (THREATS C11).
        let translate = |va: u64, len: u64| mem.va_to_gpa(va, len);
        let rings = (|| {
            Ok::<_, vhostd_mem::MemError>((
                translate(v.desc_va, dl)?,
                translate(v.avail_va, al)?,
                translate(v.used_va, ul)?,
            ))
        })();
        let (desc, avail, used) = match rings {
            Ok(r) => r,
            Err(e) => {
                self.port.set_error(format!("queue {vq}: {e}"));
                warn_rl!("port {} queue {vq}: bad ring address: {e}", self.port.name);
                return Err(VuError::InvalidParam);
            }
        };
        let qc = QueueConfig {
            size: v.size,
            desc,
            avail,
            used,
            base: v.base,
            event_idx: cfg.event_idx,
            indirect: cfg.indirect,
            packed: cfg.packed,
            in_order: cfg.in_order,
        };
        let queue = match Queue::new(qc, &mem) {
            Ok(q) => q,
            Err(e) => {
                self.port.set_error(format!("queue {vq}: {e}"));
                warn_rl!("port {} queue {vq}: cannot start ring: {e}", self.port.name);
                return Err(VuError::InvalidParam);
            }
        };
        let kick = match v.kick.as_ref().map(File::try_clone).transpose() {
            Ok(k) => k,
            Err(_) => return Err(VuError::BackendInternalError),
        };
        let ring = RingStart {
            queue,
            mem,
            kick,
            call: v.call.clone(),
            err: v.err.clone(),
            cfg,
        };
        let (w, d) = self.worker(vq).ok_or(VuError::InvalidParam)?;
        if let Err(e) = w.start(d, ring) {
            self.port.set_error(format!("queue {vq}: {e}"));
            log::error!("port {} queue {vq}: {e}", self.port.name);
            return Err(VuError::BackendInternalError);
        }
        if let Some(v) = self.vrings.get_mut(vq) {
            v.running = true;
        }
        log::debug!(
            "port {} queue {vq}: started (size {})",
            self.port.name,
            qc.size
        );
        Ok(())
    }

    /// Applies `f` to ring `vq`; a running ring is stopped around the change
    /// and restarted at the same avail index (the worker never sees a
    /// half-changed ring).
    fn change_running_ring(&mut self, vq: usize, f: impl FnOnce(&mut Vring)) -> VuResult<()> {
        let was = self.vrings.get(vq).is_some_and(|v| v.running);
        self.stop_ring(vq);
        if let Some(v) = self.vrings.get_mut(vq) {
            f(v);
        }
        if was {
            self.sync_ring(vq)?;
        }
        Ok(())
    }

    /// Stops every running ring, runs `f`, then restarts what should run.
    fn with_rings_stopped(&mut self, f: impl FnOnce(&mut Self) -> VuResult<()>) -> VuResult<()> {
        for vq in 0..self.vrings.len() {
            self.stop_ring(vq);
        }
        let res = f(self);
        for vq in 0..self.vrings.len() {
            if let Err(e) = self.sync_ring(vq) {
                log::debug!("port {} queue {vq}: not restarted: {e}", self.port.name);
            }
        }
        res
    }

    /// `SET_VRING_ENABLE` from a front-end that sends it before
    /// `SET_FEATURES` (QEMU >= 8 at device reset), which the `vhost` crate
    /// refuses; the shim (quirks.rs) answers it and calls this on its own
    /// thread. That thread's seccomp filter allows no new fds, so a ring
    /// this would start (which dups its eventfds) is left to the connection
    /// thread, which starts it after its next request
    /// ([`Self::sync_deferred`]); stopping one is done here.
    pub fn set_vring_enable_early(&mut self, index: u32, enable: bool) -> VuResult<()> {
        log::debug!(
            "port {}: SET_VRING_ENABLE {index} {enable} (before SET_FEATURES)",
            self.port.name
        );
        let vq = self.vring_index(index)?;
        let want = {
            if let Some(v) = self.vrings.get_mut(vq) {
                v.enabled = enable;
            }
            self.wants_running(vq)
        };
        match self.vrings.get_mut(vq) {
            Some(v) if want && !v.running => {
                v.deferred = true;
                Ok(())
            }
            _ => self.sync_ring(vq),
        }
    }

    /// Starts the rings an early enable left for this (the connection)
    /// thread. Called after every request.
    pub fn sync_deferred(&mut self) {
        for vq in 0..self.vrings.len() {
            if self.vrings.get(vq).is_some_and(|v| v.deferred) {
                // a refusal is logged and recorded by sync_ring itself
                let _ = self.sync_ring(vq);
            }
        }
    }

    /// Stops all rings and forgets the connection's state (disconnect,
    /// RESET_OWNER).
    pub fn reset(&mut self) {
        for vq in 0..self.vrings.len() {
            self.stop_ring(vq);
        }
        for v in self.vrings.iter_mut() {
            *v = Vring::default();
        }
        self.mem = None;
        self.acked = 0;
        self.features_set = false;
        self.protocol = 0;
        self.port.features.store(0, Ordering::Relaxed);
        for b in &self.port.broken {
            b.store(false, Ordering::Relaxed);
        }
    }

    fn set_memory(&mut self, mem: GuestMem) -> VuResult<()> {
        log::info!(
            "port {}: memory table: {} regions, {} MiB",
            self.port.name,
            mem.num_regions(),
            mem.total_size() >> 20
        );
        let mem = Arc::new(mem);
        self.with_rings_stopped(|h| {
            h.mem = Some(mem);
            Ok(())
        })
    }

    fn any_running(&self) -> bool {
        self.vrings.iter().any(|v| v.running)
    }
}

fn region_spec(r: &VhostUserMemoryRegion, file: File) -> RegionSpec {
    RegionSpec {
        guest_phys_addr: r.guest_phys_addr,
        memory_size: r.memory_size,
        user_addr: r.user_addr,
        mmap_offset: r.mmap_offset,
        file: Arc::new(file),
    }
}

fn mem_err(port: &Port, e: vhostd_mem::MemError) -> VuError {
    warn_rl!("port {}: memory table rejected: {e}", port.name);
    port.set_error(format!("memory table rejected: {e}"));
    VuError::InvalidParam
}

impl VhostUserBackendReqHandlerMut for PortHandler {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.offered)
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        // Only features we offered (THREATS C15); no change while rings run
        // but dirty logging (THREATS C8).
        if features & !(self.offered | VHOST_F_LOG_ALL) != 0 {
            warn_rl!(
                "port {}: front-end acked unoffered features {features:#x}",
                self.port.name
            );
            return Err(VuError::InvalidParam);
        }
        if self.any_running() && (features ^ self.acked) & !VHOST_F_LOG_ALL != 0 {
            return Err(invalid("feature change while rings run"));
        }
        self.acked = features;
        self.features_set = true;
        self.port.features.store(features, Ordering::Relaxed);
        log::info!("port {}: features acked {features:#x}", self.port.name);
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        // The crate checked files.len() == regions.len() and the payload size.
        let specs = regions
            .iter()
            .zip(files)
            .map(|(r, f)| region_spec(r, f))
            .collect();
        let mem = GuestMem::from_specs(specs).map_err(|e| mem_err(&self.port, e))?;
        self.set_memory(mem)?;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        log::debug!(
            concat!("port {}: ", "SET_VRING_NUM {} {}"),
            self.port.name,
            index,
            num
        );
        let vq = self.vring_index(index)?;
        // Linux vhost_vring_set_num / DPDK: 0, > 32768 or not a power of two
        // is refused (THREATS C3).
        let size = u16::try_from(num)
            .ok()
            .filter(|n| *n > 0 && *n <= MAX_QUEUE_SIZE && n.is_power_of_two());
        let size = size.ok_or(VuError::InvalidParam)?;
        if self.vrings.get(vq).is_some_and(|v| v.running) {
            return Err(invalid("ring size change while running"));
        }
        if let Some(v) = self.vrings.get_mut(vq) {
            v.size = size;
        }
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        log::debug!(
            concat!("port {}: ", "SET_VRING_ADDR {}"),
            self.port.name,
            index
        );
        let vq = self.vring_index(index)?;
        self.stop_ring(vq);
        if let Some(v) = self.vrings.get_mut(vq) {
            v.desc_va = descriptor;
            v.used_va = used;
            v.avail_va = available;
            v.addr_set = true;
        }
        self.sync_ring(vq)
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        log::debug!(
            concat!("port {}: ", "SET_VRING_BASE {} {}"),
            self.port.name,
            index,
            base
        );
        let vq = self.vring_index(index)?;
        // split: a 16-bit avail index; packed: avail and used positions with
        // their wrap counters, checked against the size when the ring starts
        if !NetConfig::from_features(self.acked).packed && base > u32::from(u16::MAX) {
            return Err(VuError::InvalidParam);
        }
        if self.vrings.get(vq).is_some_and(|v| v.running) {
            return Err(invalid("ring base change while running"));
        }
        if let Some(v) = self.vrings.get_mut(vq) {
            v.base = base;
        }
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        log::debug!(
            concat!("port {}: ", "GET_VRING_BASE {}"),
            self.port.name,
            index
        );
        let vq = self.vring_index(index)?;
        self.stop_ring(vq);
        let v = self.vrings.get_mut(vq).ok_or(VuError::InvalidParam)?;
        // The ring is stopped until a new SET_VRING_KICK.
        v.started = false;
        v.kick = None;
        v.kick_nofd = false;
        Ok(VhostUserVringState::new(index, v.base))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        log::debug!(
            concat!("port {}: ", "SET_VRING_KICK {} fd={}"),
            self.port.name,
            index,
            fd.is_some()
        );
        let vq = self.vring_index(u32::from(index))?;
        self.stop_ring(vq);
        if let Some(v) = self.vrings.get_mut(vq) {
            v.kick_nofd = fd.is_none();
            v.kick = fd;
            v.started = true;
        }
        self.sync_ring(vq)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        log::debug!(
            concat!("port {}: ", "SET_VRING_CALL {} fd={}"),
            self.port.name,
            index,
            fd.is_some()
        );
        let vq = self.vring_index(u32::from(index))?;
        self.change_running_ring(vq, |v| v.call = fd.map(Arc::new))
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let vq = self.vring_index(u32::from(index))?;
        self.change_running_ring(vq, |v| v.err = fd.map(Arc::new))
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        let ours = protocol_features() | VhostUserProtocolFeatures::REPLY_ACK;
        if features & !ours.bits() != 0 {
            warn_rl!(
                "port {}: unoffered protocol features {features:#x}",
                self.port.name
            );
            return Err(VuError::InvalidParam);
        }
        self.protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        // Virtqueues (2 per pair), as rust-vmm front-ends (cloud-hypervisor)
        // read it. QEMU reads the same number as queue *pairs* and only
        // checks `pairs asked <= answer`, so it works for both; asking QEMU
        // for more pairs than --queues fails on the first vring index past
        // ours, with a log line.
        Ok(u64::try_from(self.vrings.len()).unwrap_or(2))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        log::debug!(
            concat!("port {}: ", "SET_VRING_ENABLE {} {}"),
            self.port.name,
            index,
            enable
        );
        let vq = self.vring_index(index)?;
        if let Some(v) = self.vrings.get_mut(vq) {
            v.enabled = enable;
        }
        self.sync_ring(vq)
    }

    fn get_config(
        &mut self,
        _offset: u32,
        _size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        Err(invalid("config space is not offered"))
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        Err(invalid("config space is not offered"))
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(invalid("not a gpu"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(invalid("shared objects are not offered"))
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        Err(invalid("inflight tracking is not offered"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(invalid("inflight tracking is not offered"))
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(u64::try_from(MAX_REGIONS).unwrap_or(8))
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        let spec = region_spec(region, fd);
        let base = self
            .mem
            .clone()
            .unwrap_or_else(|| Arc::new(GuestMem::empty()));
        if base.has_region(&spec) {
            // QEMU repeats ADD_MEM_REG once per queue pair: nothing to do.
            return Ok(None);
        }
        let mem = base.with_region(spec).map_err(|e| mem_err(&self.port, e))?;
        self.set_memory(mem)?;
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        let base = self.mem.clone().ok_or(VuError::InvalidParam)?;
        match base.without_region(region.guest_phys_addr, region.memory_size) {
            Ok(mem) => self.set_memory(mem),
            // Removed already: QEMU repeats REM_MEM_REG once per queue pair.
            Err(vhostd_mem::MemError::NoSuchRegion(_)) => Ok(()),
            Err(e) => Err(mem_err(&self.port, e)),
        }
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(invalid("device state transfer is not offered"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(invalid("device state transfer is not offered"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(invalid("shared memory regions are not offered"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(invalid("dirty logging is not offered"))
    }
}
