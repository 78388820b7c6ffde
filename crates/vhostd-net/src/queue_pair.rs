//! One RX/TX virtqueue pair bound to one back-end queue: the data path.
//!
//! ```text
//!  guest TX ring --pop--> copy chain into tx_buf --validate hdr--> backend.send
//!        ^ used(len 0), one publish + one notify decision per burst
//!  backend.recv --> rx_buf --write into 1..n RX chains (MRG_RXBUF)--> used(len)
//! ```
//! One copy between guest and host memory in each direction. Buffers are
//! allocated when the pair is made, never per packet.

use vhostd_api::{Count, QueueStats};
use vhostd_backend::{Backend, BackendError, MAX_PACKET};
use vhostd_mem::GuestMem;
use vhostd_virtq::{Chain, Queue, QueueError, Single, UsedRef};

use crate::hdr::{self, NUM_BUFFERS_END, NUM_BUFFERS_OFFSET};
use crate::tune::HeaderWrite;
use crate::NetConfig;

/// Most packets moved per direction per call: bounds the work one wake-up
/// does, so RX and TX and other queues get their turn (THREATS C18: Linux
/// vhost-net's weight is 256 packets).
pub const BURST: usize = 256;

/// TX chains taken before any is copied.
const TX_BATCH: usize = 32;

/// The first TX_PREFETCH chains of a TX batch have their buffers' first
/// lines prefetched as they are taken; each later one that many chains
/// ahead of its copy. Prefetching all 32 as taken (before) left the far
/// phase (a cache-line round trip ~400 ns) with more misses in flight
/// than the core tracks; same-binary A/B, loop packed 64 B far: 9.1/9.5
/// -> 10.5/11.3 Mpps (4 ahead: 11.0/11.1), g2h and loop split level.
const TX_PREFETCH: usize = 8;

/// RX chains taken at once by `pop_batch` when they qualify (plain single
/// buffers). Same-binary A/B at 64 B against 4 (one packed descriptor
/// line): split h2g 35.5 -> 40.6 Mpps, packed h2g 38 -> 41.4.
const RX_GROUP: usize = 16;

/// The used entries an RX group is completed with (RX_GROUP of them): their
/// lines are taken for writing (PREFETCHW) as soon as the group is taken,
/// before its copies. Same-binary A/B, 64 B: h2g packed near 38.9/40.0 ->
/// 43.8/44.2 Mpps, far 19.2-19.7 -> 20.8-21.0; h2g split near 39.0 -> 40.0,
/// far 17.7/17.9 -> 18.2/18.8; loop packed far 10.4 -> 11.9-12.4, near
/// +3-12 %. docs/PERFORMANCE.md has the runs.
const RX_USED_AHEAD: u16 = 16;
const _: () = assert!(RX_USED_AHEAD as usize == RX_GROUP);

/// Used entries are published (made visible to the driver) at least this
/// often within a burst, not only at its end: the driver starts consuming
/// while the rest of the burst is done (DPDK publishes per enqueue/dequeue
/// call of 32). The notification decision stays once per burst.
const PUBLISH_EVERY: usize = 32;

/// TX chains taken at once by `pop_batch` within a TX_BATCH. 8 against 4
/// and 16 at 64 B: split g2h 30.1 / 33.0 / 34.5 Mpps, packed g2h 34.5 /
/// 33.4 / 32.3; 8 is within 4 % of the best of both.
const TX_GROUP: usize = 8;

/// Hints the first lines of a TX buffer in (its header and, past 64
/// bytes, the next line).
#[inline]
fn prefetch_frame(mem: &GuestMem, addr: u64, len: u32) {
    mem.prefetch(addr);
    if len > 64 {
        mem.prefetch(addr.wrapping_add(64));
    }
}

/// What a processing call left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing left to do; notifications are enabled.
    Idle,
    /// The burst budget ran out with work left: call again soon.
    More,
    /// RX only: a packet waits for guest buffers; RX kicks are enabled.
    Blocked,
}

/// Result of one processing call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Work state.
    pub status: Status,
    /// The driver wants a call (used entries were published and not
    /// suppressed by EVENT_IDX / NO_INTERRUPT).
    pub call: bool,
    /// Used entries were published (a call decision was made).
    pub published: bool,
    /// Used entries published.
    pub completed: u32,
}

/// Ends a burst: publishes the `done` used entries written (one release
/// store of used.idx) and makes the one notification decision for them.
pub(crate) fn publish_burst(
    q: &mut Queue,
    mem: &GuestMem,
    done: usize,
    status: Status,
    stats: &mut QueueStats,
) -> Result<Outcome, QueueError> {
    let mut out = Outcome {
        status,
        call: false,
        published: false,
        completed: 0,
    };
    if done > 0 {
        q.publish_used(mem)?;
        out.call = q.needs_notification(mem)?;
        out.published = true;
        out.completed = u32::try_from(done).unwrap_or(u32::MAX);
        stats.bursts.inc();
    }
    Ok(out)
}

impl Outcome {
    const IDLE: Outcome = Outcome {
        status: Status::Idle,
        call: false,
        published: false,
        completed: 0,
    };
}

/// The back-end's next frame into `buf`, runts (shorter than the virtio-net
/// header, or longer than the buffer) dropped and counted. `None` when the
/// back-end has nothing (or failed, counted, or gave [`BURST`] runts).
fn next_frame(
    backend: &mut dyn Backend,
    buf: &mut Vec<u8>,
    hl: usize,
    stats: &mut QueueStats,
) -> Option<usize> {
    // a back-end full of runts is looked at again on the next pass
    for _ in 0..BURST {
        match backend.recv_owned(buf) {
            Ok(None) => return None,
            Ok(Some(n)) if n < hl || n > buf.len() => {
                stats.dropped_runt.inc();
                stats.drops.inc();
            }
            Ok(Some(n)) => return Some(n),
            Err(_) => {
                stats.dropped_backend.inc();
                stats.drops.inc();
                return None;
            }
        }
    }
    None
}

/// Sets a frame's num_buffers to 1, storing only if it is not already:
/// the frame is copied out right after, and a 2-byte store inside the
/// copy's first 64-byte load cannot be forwarded to it, so the load waits
/// until every older store has reached the cache, the previous frames'
/// stores into guest lines still in flight among them.
fn set_one_buffer(pkt: &mut [u8]) {
    if let Some(nb) = pkt.get_mut(NUM_BUFFERS_OFFSET..NUM_BUFFERS_END) {
        if nb != [1, 0] {
            nb.copy_from_slice(&1u16.to_le_bytes());
        }
    }
}

/// Writes `out` (a header of `hl` bytes, then the frame) at `addr`, the
/// header only if the guest's buffer does not hold those bytes already
/// ([`HeaderWrite::Compare`]). A guest changing its own buffer meanwhile
/// only races itself: what it reads is its own bytes or ours.
#[inline(always)]
fn write_unless_equal(mem: &GuestMem, addr: u64, out: &[u8], hl: usize) -> bool {
    let (Some(h), Some(f)) = (out.get(..hl), out.get(hl..)) else {
        return false;
    };
    // fixed-size loads and compares (a 12-byte memmove into a stack buffer
    // and a memcmp call were 7-9 % of a loop profile)
    let same = match hl {
        12 => holds::<12>(mem, addr, h),
        10 => holds::<10>(mem, addr, h),
        _ => false,
    };
    // (`f` is empty for the `ceiling:` diagnostic: the header only)
    (same || mem.write(addr, h).is_ok())
        && (f.is_empty() || mem.write(addr.wrapping_add(hl as u64), f).is_ok())
}

/// Whether the guest's `N` bytes at `addr` are `want` (false if unreadable).
#[inline(always)]
fn holds<const N: usize>(mem: &GuestMem, addr: u64, want: &[u8]) -> bool {
    match (mem.read_array::<N>(addr), <&[u8; N]>::try_from(want)) {
        (Ok(cur), Ok(want)) => cur == *want,
        _ => false,
    }
}

/// Adds a TX batch's sent frames to the queue's counters.
fn count_sent(stats: &mut QueueStats, frames: u64, bytes: u64, gso: u64) {
    stats.packets.add_n(frames);
    stats.bytes.add_n(bytes);
    stats.gso_packets.add_n(gso);
}

/// A TX frame the back-end took: its payload bytes and whether it was GSO.
#[derive(Clone, Copy)]
struct Sent {
    bytes: u64,
    gso: bool,
}

enum Place {
    /// Delivered.
    Placed,
    /// Packet dropped (counted).
    Dropped,
    /// Not enough buffers; nothing consumed but bad chains.
    NoBuffers,
}

/// A queue pair: rings (when running), back-end, and reusable buffers.
#[derive(Debug)]
pub struct QueuePair {
    cfg: NetConfig,
    rx: Option<Queue>,
    tx: Option<Queue>,
    backend: Box<dyn Backend>,
    /// TX chains taken in one batch (TX_BATCH, reused).
    tx_chains: Vec<Chain>,
    rx_chain: Chain,
    rx_first: Chain,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
    /// Length of the packet waiting in `rx_buf` (0: none).
    rx_pending: usize,
    rx_heads: Vec<(UsedRef, u32)>,
    /// RX chains of one `pop_batch` group.
    rx_batch: [Single; RX_GROUP],
    /// TX chains of a TX_BATCH taken by `pop_batch` (where `tx_single`).
    tx_singles: [Single; TX_BATCH],
    /// Whether entry i of a TX batch is in `tx_singles` (else `tx_chains`).
    tx_single: [bool; TX_BATCH],
    /// Entry i's first buffer (address, length), noted as it is taken, for
    /// the prefetch TX_PREFETCH entries ahead of its copy.
    tx_first: [(u64, u32); TX_BATCH],
    /// Ask for kicks when idle (false while the caller polls).
    notify: bool,
    /// Whether frame bytes cross guest memory: false only for the
    /// `ceiling:` benchmark diagnostic (headers and rings only).
    frame_bytes: bool,
    /// How the RX group path writes headers (the worker's
    /// [`crate::tune::HeaderTuner`] chooses).
    rx_header: HeaderWrite,
}

impl QueuePair {
    /// A stopped pair on `backend`.
    pub fn new(backend: Box<dyn Backend>) -> Self {
        QueuePair {
            cfg: NetConfig::from_features(0),
            rx: None,
            tx: None,
            tx_chains: (0..TX_BATCH).map(|_| Chain::with_capacity(16)).collect(),
            rx_chain: Chain::with_capacity(64),
            rx_first: Chain::with_capacity(64),
            tx_buf: vec![0u8; MAX_PACKET],
            rx_buf: vec![0u8; MAX_PACKET],
            rx_pending: 0,
            rx_heads: Vec::with_capacity(256),
            rx_batch: [Single::default(); RX_GROUP],
            tx_singles: [Single::default(); TX_BATCH],
            tx_single: [false; TX_BATCH],
            tx_first: [(0, 0); TX_BATCH],
            notify: true,
            frame_bytes: backend.needs_frame_bytes(),
            rx_header: HeaderWrite::Write,
            backend,
        }
    }

    /// The back-end.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Applies newly acked features (header length, offloads) to the pair
    /// and its back-end.
    pub fn configure(&mut self, cfg: NetConfig) -> Result<(), BackendError> {
        if cfg.hdr_len != self.cfg.hdr_len {
            // a packet read with the old header length cannot be delivered
            self.rx_pending = 0;
        }
        self.cfg = cfg;
        self.backend.configure(cfg.hdr_len, cfg.guest)
    }

    /// Whether idle rings ask the driver for kicks (event mode) or leave
    /// them off because the caller polls (poll mode, or adaptive while busy).
    pub fn set_notify(&mut self, notify: bool) {
        self.notify = notify;
    }

    /// Sets how RX headers are written (the worker's tuner, tests).
    pub fn set_rx_header(&mut self, way: HeaderWrite) {
        self.rx_header = way;
    }

    /// The active configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Starts (or replaces) the RX ring.
    pub fn set_rx(&mut self, q: Option<Queue>) -> Option<Queue> {
        std::mem::replace(&mut self.rx, q)
    }

    /// Starts (or replaces) the TX ring.
    pub fn set_tx(&mut self, q: Option<Queue>) -> Option<Queue> {
        std::mem::replace(&mut self.tx, q)
    }

    /// The RX ring, if running.
    pub fn rx(&self) -> Option<&Queue> {
        self.rx.as_ref()
    }

    /// The TX ring, if running.
    pub fn tx(&self) -> Option<&Queue> {
        self.tx.as_ref()
    }

    /// Whether a received packet waits for RX buffers.
    pub fn rx_blocked(&self) -> bool {
        self.rx_pending != 0
    }

    /// Moves up to [`BURST`] packets guest -> back-end. Kicks stay disabled
    /// while there is work and are re-enabled (with a race re-check) when
    /// the ring is drained.
    pub fn process_tx(
        &mut self,
        mem: &GuestMem,
        stats: &mut QueueStats,
    ) -> Result<Outcome, QueueError> {
        let Some(q) = self.tx.as_mut() else {
            return Ok(Outcome::IDLE);
        };
        q.disable_notification(mem)?;
        let mut done = 0usize;
        let status = loop {
            // Chains are taken TX_BATCH at a time and their first buffer
            // lines prefetched ahead of the copies (TX_PREFETCH): the
            // driver's core wrote them last, and overlapping those misses
            // is what DPDK's batch dequeue does too.
            while done < BURST {
                let want = TX_BATCH.min(BURST.saturating_sub(done));
                let mut n = 0usize;
                while n < want {
                    // TX_GROUP plain single-buffer chains at once where
                    // they qualify (kept as `Single`s, no Chain); else one
                    // chain walked by pop
                    let group = match self.tx_singles.get_mut(n..n.saturating_add(TX_GROUP)) {
                        Some(g) if want.saturating_sub(n) >= TX_GROUP => {
                            <&mut [Single; TX_GROUP]>::try_from(g).ok()
                        }
                        _ => None,
                    };
                    let mut got = 0usize;
                    if let Some(g) = group {
                        if q.pop_batch(mem, false, g)? {
                            let pre = TX_PREFETCH.saturating_sub(n);
                            let marks = self.tx_single.iter_mut().zip(self.tx_first.iter_mut());
                            for (k, (s, (single, first))) in g.iter().zip(marks.skip(n)).enumerate()
                            {
                                *single = true;
                                *first = (s.addr, s.len);
                                if k < pre {
                                    prefetch_frame(mem, s.addr, s.len);
                                }
                            }
                            got = TX_GROUP;
                        }
                    }
                    if got == 0 {
                        if let (Some(c), Some(single), Some(first)) = (
                            self.tx_chains.get_mut(n),
                            self.tx_single.get_mut(n),
                            self.tx_first.get_mut(n),
                        ) {
                            if q.pop(mem, c)? {
                                *single = false;
                                *first = c.segments().first().map_or((0, 0), |g| (g.addr, g.len));
                                if n < TX_PREFETCH {
                                    prefetch_frame(mem, first.0, first.1);
                                }
                                got = 1;
                            }
                        }
                    }
                    if got == 0 {
                        break;
                    }
                    n = n.saturating_add(got);
                }
                let items = self
                    .tx_chains
                    .iter()
                    .zip(self.tx_singles.iter())
                    .zip(self.tx_single.iter());
                // sent frames counted in locals, stored once per batch (as
                // in rx_group: fewer stores per frame behind the copies)
                let (mut sent, mut bytes, mut gso) = (0u64, 0u64, 0u64);
                for (i, ((c, s), &single)) in items.take(n).enumerate() {
                    if let Some(&(a, l)) = self
                        .tx_first
                        .get(..n)
                        .and_then(|f| f.get(i.saturating_add(TX_PREFETCH)))
                    {
                        prefetch_frame(mem, a, l);
                    }
                    let backend = self.backend.as_mut();
                    let (out, completed) = if single {
                        let (b, cfg) = (&mut self.tx_buf, &self.cfg);
                        let out = match self.frame_bytes {
                            true => Self::tx_plain::<true>(s, mem, b, backend, cfg, stats),
                            false => Self::tx_plain::<false>(s, mem, b, backend, cfg, stats),
                        };
                        (out, q.add_used_read(mem, s.used_ref()))
                    } else {
                        let out = Self::tx_one(c, mem, &mut self.tx_buf, backend, &self.cfg, stats);
                        (out, q.add_used_read(mem, c.used_ref()))
                    };
                    if let Some(o) = out {
                        sent = sent.saturating_add(1);
                        bytes = bytes.saturating_add(o.bytes);
                        gso = gso.saturating_add(u64::from(o.gso));
                    }
                    if let Err(e) = completed {
                        // a ring error stops the queue: what was sent counts
                        count_sent(stats, sent, bytes, gso);
                        return Err(e);
                    }
                }
                count_sent(stats, sent, bytes, gso);
                done = done.saturating_add(n);
                if n == want && done < BURST {
                    // this batch's completions to the driver now
                    q.publish_used(mem)?;
                }
                if n < want {
                    break;
                }
            }
            if done >= BURST {
                break Status::More;
            }
            if !self.notify {
                // polling: kicks stay off, the caller comes back
                break Status::Idle;
            }
            if q.enable_notification(mem)? {
                q.disable_notification(mem)?;
                continue;
            }
            break Status::Idle;
        };
        publish_burst(q, mem, done, status, stats)
    }

    fn tx_one(
        chain: &Chain,
        mem: &GuestMem,
        buf: &mut Vec<u8>,
        backend: &mut dyn Backend,
        cfg: &NetConfig,
        stats: &mut QueueStats,
    ) -> Option<Sent> {
        let drop = |stats: &mut QueueStats| stats.drops.inc();
        if chain.error().is_some() {
            stats.bad_chains.inc();
            drop(stats);
            return None;
        }
        if chain.writable_len() > 0 || (chain.readable_len() as usize) < cfg.hdr_len {
            stats.dropped_malformed.inc();
            drop(stats);
            return None;
        }
        // read_into fails only if the packet is larger than buf (or memory
        // vanished under a validated range): oversize either way.
        let Some(n) = chain.read_into(mem, buf) else {
            stats.dropped_oversize.inc();
            drop(stats);
            return None;
        };
        Self::tx_send(n, buf, backend, cfg, stats)
    }

    /// One plain single-buffer chain from `pop_batch` (its buffer checked
    /// to lie in guest memory): the same rules as [`QueuePair::tx_one`].
    /// Without `FRAME` (the `ceiling:` diagnostic) only the header is read;
    /// the rest of `buf` keeps whatever it held.
    fn tx_plain<const FRAME: bool>(
        s: &Single,
        mem: &GuestMem,
        buf: &mut Vec<u8>,
        backend: &mut dyn Backend,
        cfg: &NetConfig,
        stats: &mut QueueStats,
    ) -> Option<Sent> {
        let n = s.len as usize;
        if n < cfg.hdr_len {
            stats.dropped_malformed.inc();
            stats.drops.inc();
            return None;
        }
        // fails only if the packet is larger than buf (or memory vanished
        // under a validated range): oversize either way, as in tx_one
        let read = if FRAME { n } else { cfg.hdr_len };
        let copied = buf
            .get_mut(..n)
            .and_then(|dst| dst.get_mut(..read))
            .is_some_and(|dst| mem.read(s.addr, dst).is_ok());
        if !copied {
            stats.dropped_oversize.inc();
            stats.drops.inc();
            return None;
        }
        Self::tx_send(n, buf, backend, cfg, stats)
    }

    /// Validates the `n`-byte packet copied into `buf` and hands it to the
    /// back-end. Drops are counted in `stats`; what was sent is returned,
    /// for the caller to count once per batch (see [`Sent`]).
    #[inline(always)]
    fn tx_send(
        n: usize,
        buf: &mut Vec<u8>,
        backend: &mut dyn Backend,
        cfg: &NetConfig,
        stats: &mut QueueStats,
    ) -> Option<Sent> {
        let drop = |stats: &mut QueueStats| stats.drops.inc();
        let Some(pkt) = buf.get(..n) else {
            stats.dropped_oversize.inc();
            drop(stats);
            return None;
        };
        // The header is judged on our copy: the guest cannot change it
        // between this check and the send (THREATS C5).
        if hdr::validate_tx(pkt, cfg).is_err() {
            stats.dropped_bad_header.inc();
            drop(stats);
            return None;
        }
        let gso = hdr::is_gso(pkt);
        if cfg.hdr_len == 12 {
            // What a guest receives needs num_buffers 1 when it fits one
            // buffer. Written here, on a line the copy just wrote, the RX
            // path finds it set (loopback, switch) and leaves the frame
            // alone (set_one_buffer): loop 64 B +10-18 % (same-run A/B).
            // Transmitted, the field means nothing (TAP ignores it).
            if let Some(f) = buf.get_mut(..n) {
                set_one_buffer(f);
            }
        }
        // the back-end may take `buf` and leave another in its place
        match backend.send_owned(buf, n) {
            Ok(()) => Some(Sent {
                bytes: n.saturating_sub(cfg.hdr_len) as u64,
                gso,
            }),
            Err(_) => {
                stats.dropped_backend.inc();
                drop(stats);
                None
            }
        }
    }

    /// Moves up to [`BURST`] packets back-end -> guest.
    pub fn process_rx(
        &mut self,
        mem: &GuestMem,
        stats: &mut QueueStats,
    ) -> Result<Outcome, QueueError> {
        let Some(q) = self.rx.as_mut() else {
            return Ok(Outcome::IDLE);
        };
        if !self.notify {
            // polling: no RX kicks either
            q.disable_notification(mem)?;
        }
        let hl = self.cfg.hdr_len;
        let compare = self.rx_header == HeaderWrite::Compare;
        let mut delivered = 0usize;
        let mut used = 0usize;
        let mut retries = 0usize;
        let mut shown = 0usize;
        let status = loop {
            if used.saturating_sub(shown) >= PUBLISH_EVERY {
                q.publish_used(mem)?;
                shown = used;
            }
            if delivered >= BURST {
                break Status::More;
            }
            if self.rx_pending == 0 {
                match next_frame(self.backend.as_mut(), &mut self.rx_buf, hl, stats) {
                    Some(n) => self.rx_pending = n,
                    None => break Status::Idle,
                }
            }
            if delivered.saturating_add(RX_GROUP) <= BURST
                && q.pop_batch(mem, true, &mut self.rx_batch)?
            {
                // RX_GROUP single-buffer chains at once (DPDK's batch):
                // one frame goes into each (the first is the one already
                // waiting in rx_buf), no Chain bookkeeping. Tried and
                // dropped: prefetching the buffers first (28 vs 40 Mpps: a
                // read prefetch of the front-end's line only adds a second
                // transfer for the write); taking the frames of a group
                // first and copying them back to back (no gain); each
                // buffer's first two lines taken for writing (PREFETCHW) 4
                // buffers ahead of its copy: +30 % far at 64 B on the
                // machine of an earlier session, -30 to -40 % on this one
                // (h2g 1518 B far 3.1 -> 5.3 Mpps without it, 64 B far 5.4
                // -> 7.6, packed 6.4 -> 9.1; docs/PERFORMANCE.md).
                // The group's used entries are written after its copies,
                // on lines the driver read last: taken for writing now,
                // their ownership transfers overlap the copies.
                q.prefetch_used(mem, RX_USED_AHEAD);
                let (batch, pending) = (&self.rx_batch, &mut self.rx_pending);
                let (backend, buf) = (self.backend.as_mut(), &mut self.rx_buf);
                let (fb, u, d) = (self.frame_bytes, &mut used, &mut delivered);
                let (kept, idle, too_big) = if compare {
                    Self::rx_group::<true>(
                        q, mem, stats, batch, pending, backend, buf, fb, hl, u, d,
                    )?
                } else {
                    Self::rx_group::<false>(
                        q, mem, stats, batch, pending, backend, buf, fb, hl, u, d,
                    )?
                };
                if kept < RX_GROUP {
                    q.unpop_batch(RX_GROUP.saturating_sub(kept));
                }
                if idle {
                    break Status::Idle;
                }
                if !too_big {
                    continue;
                }
            }
            let len = self.rx_pending;
            let placed = Self::place(
                q,
                mem,
                &self.cfg,
                self.rx_buf.get_mut(..len).ok_or(QueueError::BufferWrite)?,
                [&mut self.rx_first, &mut self.rx_chain],
                &mut self.rx_heads,
                &mut used,
                stats,
            )?;
            match placed {
                Place::Placed => {
                    delivered = delivered.saturating_add(1);
                    self.rx_pending = 0;
                }
                Place::Dropped => self.rx_pending = 0,
                Place::NoBuffers => {
                    // Ask for a kick when the guest adds buffers; if it added
                    // some meanwhile, try again (bounded). Polling: no kick,
                    // the caller comes back.
                    if self.notify && q.enable_notification(mem)? && retries < BURST {
                        retries = retries.saturating_add(1);
                        continue;
                    }
                    break Status::Blocked;
                }
            }
        };
        publish_burst(q, mem, used, status, stats)
    }

    /// One RX group's frames into its buffers, the header written as
    /// COMPARE says (a function per way, so the Write path's code does not
    /// carry the Compare path's). Returns (buffers kept, back-end dry,
    /// next frame too big for a group buffer).
    ///
    /// Counts are kept in locals and stored once per group: every store
    /// takes a store-buffer entry behind the frame copies' stores into
    /// guest lines (misses while the front-end's core holds them), so
    /// fewer stores per frame leave room for more copies in flight.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn rx_group<const COMPARE: bool>(
        q: &mut Queue,
        mem: &GuestMem,
        stats: &mut QueueStats,
        batch: &[Single; RX_GROUP],
        rx_pending: &mut usize,
        backend: &mut dyn Backend,
        rx_buf: &mut Vec<u8>,
        frame_bytes: bool,
        hl: usize,
        used: &mut usize,
        delivered: &mut usize,
    ) -> Result<(usize, bool, bool), QueueError> {
        let mut kept = 0usize;
        let mut idle = false;
        let mut too_big = false;
        let (mut frames, mut bytes, mut gso, mut bad, mut compared) =
            (0usize, 0u64, 0u64, 0u64, 0u64);
        // the frame already waiting, if any; then the back-end's next ones
        let mut waiting = std::mem::take(rx_pending);
        // used lengths, completed after the group's copies: the used
        // entries' stores then do not sit between two frames' copies
        let mut lens = [0u32; RX_GROUP];
        for (s, len) in batch.iter().zip(lens.iter_mut()) {
            let n = match std::mem::take(&mut waiting) {
                0 => match next_frame(backend, rx_buf, hl, stats) {
                    Some(n) => n,
                    None => {
                        idle = true;
                        break;
                    }
                },
                n => n,
            };
            let Some(pkt) = rx_buf.get_mut(..n).filter(|_| n <= s.len as usize) else {
                // larger than this buffer: the general path below
                // (several buffers with MRG_RXBUF, or a drop)
                *rx_pending = n;
                too_big = true;
                break;
            };
            if hl == 12 {
                // fits one buffer: num_buffers is 1, mergeable or not
                // (usually set already, see tx_send)
                set_one_buffer(pkt);
            }
            kept = kept.saturating_add(1);
            // (the `ceiling:` diagnostic writes the header only, compared
            // as vhostd's is: no more guest-line writes than vhostd makes)
            let out = match frame_bytes {
                true => &*pkt,
                false => pkt.get(..hl).unwrap_or_default(),
            };
            let written = if COMPARE && out.len() >= hl {
                compared = compared.saturating_add(1);
                write_unless_equal(mem, s.addr, out, hl)
            } else {
                mem.write(s.addr, out).is_ok()
            };
            if !written {
                // (pop_batch checked the buffer; memory does not
                // shrink under us) complete it empty, keep the frame
                bad = bad.saturating_add(1);
                *rx_pending = n;
                break;
            }
            *len = u32::try_from(n).unwrap_or(u32::MAX);
            frames = frames.saturating_add(1);
            bytes = bytes.saturating_add(n.saturating_sub(hl) as u64);
            if hdr::is_gso(pkt) {
                gso = gso.saturating_add(1);
            }
        }
        let completed = q.add_used_singles(mem, batch.get(..kept).unwrap_or_default(), &lens);
        *used = used.saturating_add(kept);
        *delivered = delivered.saturating_add(frames);
        stats.packets.add_n(frames as u64);
        stats.bytes.add_n(bytes);
        stats.gso_packets.add_n(gso);
        stats.bad_chains.add_n(bad);
        stats.header_compared.add_n(compared);
        completed.map(|()| (kept, idle, too_big))
    }

    /// Writes one packet into as many RX chains as it needs (one unless
    /// MRG_RXBUF). On too few buffers, gives the chains back (`rewind`).
    #[allow(clippy::too_many_arguments)]
    fn place(
        q: &mut Queue,
        mem: &GuestMem,
        cfg: &NetConfig,
        pkt: &mut [u8],
        chains: [&mut Chain; 2],
        heads: &mut Vec<(UsedRef, u32)>,
        used: &mut usize,
        stats: &mut QueueStats,
    ) -> Result<Place, QueueError> {
        let [first, chain] = chains;
        let len = pkt.len();
        let hl = cfg.hdr_len;
        if hl == 12 && !cfg.mrg_rxbuf {
            // VERSION_1 without MRG_RXBUF: num_buffers must be 1 (virtio 1.2 §5.1.6.3.1).
            set_one_buffer(pkt);
        }
        heads.clear();
        // set in `pkt` before the copy when the frame fits the first chain
        // (the common case): no second guest write for num_buffers
        let mut nb_in_pkt = false;
        // chains popped since `mark` and not completed can be given back
        let mut mark = q.mark();
        let mut off = 0usize;
        while off < len {
            if heads.len() >= usize::from(q.size()) {
                // needs more buffers than the ring holds: can never fit
                q.rewind(mark);
                stats.dropped_too_big.inc();
                stats.drops.inc();
                return Ok(Place::Dropped);
            }
            let c: &mut Chain = if heads.is_empty() { first } else { chain };
            if !q.pop(mem, c)? {
                q.rewind(mark);
                return Ok(Place::NoBuffers);
            }
            let wlen = c.writable_len() as usize;
            let bad = c.error().is_some()
                || c.readable_len() > 0
                || wlen == 0
                || (heads.is_empty() && wlen < hl);
            if !bad && !cfg.mrg_rxbuf && wlen < len {
                q.rewind(mark);
                stats.dropped_too_big.inc();
                stats.drops.inc();
                return Ok(Place::Dropped);
            }
            if cfg.mrg_rxbuf && hl == 12 && heads.is_empty() && !bad && wlen >= len {
                set_one_buffer(pkt);
                nb_in_pkt = true;
            }
            let n = wlen.min(len.saturating_sub(off));
            let written = !bad
                && pkt
                    .get(off..off.saturating_add(n))
                    .is_some_and(|part| c.write_at(mem, 0, part));
            if !written {
                // A bad RX chain is completed with length 0. Chains taken
                // before it in this packet cannot be given back past a
                // completed entry, so they are completed empty too.
                for (h, _) in heads.drain(..) {
                    q.add_used(mem, h, 0)?;
                    *used = used.saturating_add(1);
                }
                q.add_used(mem, c.used_ref(), 0)?;
                *used = used.saturating_add(1);
                stats.bad_chains.inc();
                mark = q.mark();
                off = 0;
                nb_in_pkt = false;
                continue;
            }
            heads.push((c.used_ref(), u32::try_from(n).unwrap_or(u32::MAX)));
            off = off.saturating_add(n);
        }
        if cfg.mrg_rxbuf && hl == 12 && !nb_in_pkt {
            let nbuf = u16::try_from(heads.len()).unwrap_or(u16::MAX);
            // first.writable >= hl was checked, so this lands in the first chain
            if !first.write_at(mem, NUM_BUFFERS_OFFSET, &nbuf.to_le_bytes()) {
                return Err(QueueError::BufferWrite);
            }
        }
        for &(h, n) in heads.iter() {
            q.add_used(mem, h, n)?;
            *used = used.saturating_add(1);
        }
        stats.packets.inc();
        stats.bytes.add_n(len.saturating_sub(hl) as u64);
        if hdr::is_gso(pkt) {
            stats.gso_packets.inc();
        }
        Ok(Place::Placed)
    }
}
