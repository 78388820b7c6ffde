//! Worker threads: one per queue pair, each owning its [`QueuePair`] and the
//! back-end queue. A worker sleeps in epoll on its kick eventfds, its
//! back-end fd and a control eventfd; the connection handler talks to it
//! with [`Cmd`]s and waits for the answer, so ring state is only ever
//! touched by the worker.
//!
//! ```text
//!   handler --Cmd--> channel + ctrl eventfd --> worker (epoll)
//!   kick eventfd(rx/tx) ---------------------> worker -> QueuePair -> Backend
//!   worker --write 1--> call eventfd --> front-end injects the interrupt
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhostd_api::{CoalescePolicy, Count, Priority, QueueSettings, QueueStats, WorkerMode};
use vhostd_backend::Backend;
use vhostd_mem::GuestMem;
use vhostd_net::coalesce::{Coalescer, Decision, Policy};
use vhostd_net::tune::HeaderTuner;
use vhostd_net::{NetConfig, Outcome, QueuePair, Status};
use vhostd_virtq::{Queue, QueueError};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use crate::port::Port;
use crate::warn_rl;

/// Which ring of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Device -> driver (virtqueue 2i).
    Rx = 0,
    /// Driver -> device (virtqueue 2i + 1).
    Tx = 1,
    /// The control virtqueue (2N; first worker only, `--ctrl-vq`).
    Ctrl = 2,
}

/// A ring handed to a worker.
#[derive(Debug)]
pub struct RingStart {
    /// The validated ring.
    pub queue: Queue,
    /// Memory the ring lives in.
    pub mem: Arc<GuestMem>,
    /// Kick eventfd (None: the front-end polls; we poll too, every 1 ms).
    pub kick: Option<File>,
    /// Call eventfd.
    pub call: Option<Arc<File>>,
    /// Error eventfd, signalled when the ring breaks.
    pub err: Option<Arc<File>>,
    /// Data-path configuration from the acked features.
    pub cfg: NetConfig,
}

/// Requests from the connection handler.
#[derive(Debug)]
pub enum Cmd {
    /// Start (or replace) a ring.
    Start(Dir, Box<RingStart>, SyncSender<Result<(), String>>),
    /// Stop a ring; the answer is its next avail index, if it was running.
    Stop(Dir, SyncSender<Option<u32>>),
    /// Leave the thread.
    Shutdown,
}

/// The handler's side of a worker.
#[derive(Debug)]
pub struct WorkerHandle {
    tx: Sender<Cmd>,
    wake: EventFd,
    thread: Option<JoinHandle<()>>,
}

const TOKEN_CTRL: u64 = 0;
const TOKEN_RX_KICK: u64 = 1;
const TOKEN_TX_KICK: u64 = 2;
const TOKEN_BACKEND: u64 = 3;
const TOKEN_TIMER: u64 = 4;
const TOKEN_CTRL_KICK: u64 = 5;
/// Adaptive mode: how long a worker keeps polling after the last work.
const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);
/// While busy, passes between two looks at epoll (kicks, commands, timer).
const EPOLL_EVERY: u32 = 16;
/// Nice value of a worker serving a high-priority queue (needs
/// CAP_SYS_NICE; without it the worker keeps the default and says so).
const HIGH_PRIORITY_NICE: i32 = -10;
/// Nice value of a worker whose queues are all low priority (going back
/// up from it needs CAP_SYS_NICE too, as any raise does).
const LOW_PRIORITY_NICE: i32 = 19;
/// How long the handler waits for a worker's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl WorkerHandle {
    /// Spawns the worker of pair `index` on `backend`.
    pub fn spawn(
        port: Arc<Port>,
        index: usize,
        backend: Box<dyn Backend>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let wake = EventFd::new(EFD_NONBLOCK)?;
        let wake2 = wake.try_clone()?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            wake2.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_CTRL),
        )?;
        let timer = TimerFd::new()?;
        epoll.ctl(
            ControlOperation::Add,
            timer.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_TIMER),
        )?;
        let name = format!("vhostd-{}-q{}", port.name, index);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let mut w = Worker {
                port,
                index,
                epoll,
                ctrl: wake2,
                cmds: rx,
                qp: QueuePair::new(backend),
                tuner: HeaderTuner::default(),
                rx_done: 0,
                rings: [None, None, None],
                ctrl_queue: None,
                ctrl_chain: vhostd_virtq::Chain::with_capacity(8),
                backend_armed: false,
                timer,
                timer_deadline: None,
                settings: [QueueSettings::default(); 3],
                settings_gen: u64::MAX,
                nice: 0,
                mode: WorkerMode::default(),
                spin_until: None,
                did_work: false,
                faults_seen: vhostd_mem::fault_count(),
                sandboxed: false,
            };
            w.run();
        })?;
        Ok(WorkerHandle {
            tx,
            wake,
            thread: Some(thread),
        })
    }

    fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok() && self.wake.write(1).is_ok()
    }

    /// Starts a ring and waits for the worker to take it.
    pub fn start(&self, dir: Dir, ring: RingStart) -> Result<(), String> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        if !self.send(Cmd::Start(dir, Box::new(ring), rtx)) {
            return Err("worker is gone".into());
        }
        rrx.recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| "worker did not answer".to_string())?
    }

    /// Stops a ring; returns its next avail index if it was running.
    pub fn stop(&self, dir: Dir) -> Option<u32> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        if !self.send(Cmd::Stop(dir, rtx)) {
            return None;
        }
        rrx.recv_timeout(REPLY_TIMEOUT).ok().flatten()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running ring's plumbing (the ring itself lives in the QueuePair).
#[derive(Debug)]
struct Ring {
    mem: Arc<GuestMem>,
    kick: Option<File>,
    call: Option<Arc<File>>,
    err: Option<Arc<File>>,
    broken: bool,
    stats: QueueStats,
    coalescer: Coalescer,
    priority: Priority,
}

struct Worker {
    port: Arc<Port>,
    index: usize,
    epoll: Epoll,
    ctrl: EventFd,
    cmds: Receiver<Cmd>,
    qp: QueuePair,
    /// Chooses how RX headers are written (vhostd_net::tune), measured on
    /// `rx_done`, the RX used entries completed so far.
    tuner: HeaderTuner,
    rx_done: u64,
    rings: [Option<Ring>; 3],
    /// The control virtqueue, when this worker serves it.
    ctrl_queue: Option<Queue>,
    ctrl_chain: vhostd_virtq::Chain,
    backend_armed: bool,
    timer: TimerFd,
    timer_deadline: Option<Instant>,
    /// Settings of [RX, TX, ctrl], applied to rings as they start.
    settings: [QueueSettings; 3],
    settings_gen: u64,
    nice: i32,
    mode: WorkerMode,
    /// Adaptive mode: keep polling until then (work was seen recently).
    spin_until: Option<Instant>,
    /// The last pass moved something.
    did_work: bool,
    /// `vhostd_mem::fault_count()` when this worker last looked.
    faults_seen: u64,
    /// The worker seccomp filter is on this thread.
    sandboxed: bool,
}

fn policy(p: CoalescePolicy) -> Policy {
    match p {
        CoalescePolicy::Off => Policy::Off,
        CoalescePolicy::Fixed { usecs, frames } => Policy::Fixed {
            max_usecs: usecs,
            max_packets: frames,
        },
        CoalescePolicy::Adaptive => Policy::Adaptive,
    }
}

fn drain_eventfd(f: &File) -> u64 {
    let mut b = [0u8; 8];
    match (&*f).read(&mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

fn signal_eventfd(f: &File) {
    // EAGAIN means the counter is saturated: the reader will wake anyway.
    let _ = (&*f).write(&1u64.to_ne_bytes());
}

impl Worker {
    fn ring(&self, dir: Dir) -> Option<&Ring> {
        self.rings.get(dir as usize).and_then(Option::as_ref)
    }

    fn ring_mut(&mut self, dir: Dir) -> Option<&mut Ring> {
        self.rings.get_mut(dir as usize).and_then(Option::as_mut)
    }

    fn vq(&self, dir: Dir) -> usize {
        match dir {
            Dir::Ctrl => self.port.data_queues(),
            _ => self.index.saturating_mul(2).saturating_add(dir as usize),
        }
    }

    /// Whether this pass polls (kicks stay off, no sleeping).
    fn polling(&self, now: Instant) -> bool {
        match self.mode {
            WorkerMode::Poll => true,
            WorkerMode::Adaptive => self.spin_until.is_some_and(|t| now < t),
            WorkerMode::Event => false,
        }
    }

    fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 8];
        let mut more = false;
        let mut was_polling = false;
        // passes since the last epoll_wait while busy
        let mut unpolled = 0u32;
        let mut now = Instant::now();
        loop {
            // The clock is read once per look at epoll while busy (the vDSO
            // call was 4-6 % of a poll-mode profile when read every pass);
            // spin deadlines and coalescing are in tens of microseconds.
            if unpolled.is_multiple_of(4) {
                now = Instant::now();
            }
            let polling = self.polling(now);
            self.qp.set_notify(!polling);
            if was_polling && !polling {
                // leaving the spin: one pass with kicks re-armed (and the
                // race re-check) before sleeping
                was_polling = false;
                more = self.process(now);
                continue;
            }
            was_polling = polling;
            let poll_kickless = self
                .rings
                .iter()
                .flatten()
                .any(|r| r.kick.is_none() && !r.broken);
            let timeout = if more || polling {
                0
            } else if poll_kickless {
                1
            } else {
                -1
            };
            // While busy, epoll (kicks, commands, timer) is looked at only
            // every EPOLL_EVERY passes: a syscall per pass cost ~8 % of a
            // poll-mode profile. Kicks are off while polling anyway, and a
            // command waits a few microseconds more.
            if timeout == 0 && unpolled < EPOLL_EVERY {
                unpolled = unpolled.saturating_add(1);
                self.apply_settings();
                self.did_work = false;
                more = self.process(now);
                if self.did_work && self.mode == WorkerMode::Adaptive {
                    self.spin_until = now.checked_add(ADAPTIVE_SPIN);
                }
                continue;
            }
            unpolled = 0;
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!(
                        "port {} queue pair {}: epoll failed: {e}",
                        self.port.name,
                        self.index
                    );
                    return;
                }
            };
            for ev in events.iter().take(n) {
                match ev.data() {
                    TOKEN_CTRL => {
                        let _ = self.ctrl.read();
                        if !self.handle_cmds() {
                            return;
                        }
                    }
                    TOKEN_TIMER => {
                        let _ = self.timer.wait();
                        self.timer_deadline = None;
                    }
                    TOKEN_RX_KICK => self.kicked(Dir::Rx),
                    TOKEN_TX_KICK => self.kicked(Dir::Tx),
                    TOKEN_CTRL_KICK => self.kicked(Dir::Ctrl),
                    _ => {} // back-end readable: handled by process_rx below
                }
            }
            // after the wait: a change made while we slept applies to the
            // burst that woke us
            self.apply_settings();
            self.did_work = false;
            now = Instant::now();
            more = self.process(now);
            if self.did_work && self.mode == WorkerMode::Adaptive {
                self.spin_until = now.checked_add(ADAPTIVE_SPIN);
            }
        }
    }

    fn kicked(&mut self, dir: Dir) {
        if let Some(r) = self.ring_mut(dir) {
            if let Some(k) = r.kick.as_ref() {
                if drain_eventfd(k) > 0 {
                    r.stats.kicks.inc();
                }
            }
        }
    }

    /// Runs both directions once (a high-priority ring first). Returns true
    /// if work is left.
    fn process(&mut self, now: Instant) -> bool {
        // the RX header tuner's epochs (vhostd_net::tune), on the RX
        // entries completed so far
        self.tuner.tick(now, self.rx_done);
        self.qp.set_rx_header(self.tuner.way());
        let rx_first = self
            .ring(Dir::Rx)
            .is_some_and(|r| r.priority == Priority::High)
            && !self
                .ring(Dir::Tx)
                .is_some_and(|r| r.priority == Priority::High);
        // TX first by default: with loopback, what TX produced is delivered
        // by RX in the same pass.
        let order: &[Dir] = if rx_first {
            &[Dir::Rx, Dir::Tx, Dir::Rx]
        } else {
            &[Dir::Tx, Dir::Rx]
        };
        let mut more = false;
        for &dir in order {
            let qp = &mut self.qp;
            let res = self
                .rings
                .get_mut(dir as usize)
                .and_then(Option::as_mut)
                .filter(|r| !r.broken)
                .map(|r| match dir {
                    Dir::Tx => qp.process_tx(&r.mem, &mut r.stats),
                    // (the control queue is not in `order`; see below)
                    Dir::Rx | Dir::Ctrl => qp.process_rx(&r.mem, &mut r.stats),
                });
            if let Some(res) = res {
                more |= self.finish(dir, res, now);
            }
        }
        // borrow, not clone: no atomic refcount traffic per pass
        let port = &self.port;
        let res = match (
            self.rings
                .get_mut(Dir::Ctrl as usize)
                .and_then(Option::as_mut)
                .filter(|r| !r.broken),
            self.ctrl_queue.as_mut(),
        ) {
            (Some(r), Some(q)) => Some(vhostd_net::ctrl::process_ctrl(
                q,
                &r.mem,
                &mut self.ctrl_chain,
                &mut r.stats,
                &mut |class, cmd, data| crate::ctrl::command(port, class, cmd, data),
            )),
            _ => None,
        };
        if let Some(res) = res {
            more |= self.finish(Dir::Ctrl, res, now);
        }
        // a page of guest memory vanished during this pass (or another
        // worker's): one atomic load per pass to notice
        let faults = vhostd_mem::fault_count();
        if faults != self.faults_seen {
            self.faults_seen = faults;
            self.stop_faulted_rings();
        }
        self.fire_due(now);
        self.arm_timer(now);
        self.arm_backend();
        self.publish();
        more
    }

    /// Sends the calls whose coalescing deadline has passed.
    fn fire_due(&mut self, now: Instant) {
        for r in self.rings.iter_mut().flatten() {
            if r.coalescer.poll(now) {
                if let Some(c) = r.call.as_ref() {
                    signal_eventfd(c);
                }
                r.stats.calls.inc();
            }
        }
    }

    /// Keeps the timer at the earliest owed call.
    fn arm_timer(&mut self, now: Instant) {
        let earliest = self
            .rings
            .iter()
            .flatten()
            .filter_map(|r| r.coalescer.deadline())
            .min();
        if earliest == self.timer_deadline {
            return;
        }
        let res = match earliest {
            Some(d) => self.timer.reset(
                d.saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
                None,
            ),
            None => self.timer.clear(),
        };
        if res.is_ok() {
            self.timer_deadline = earliest;
        }
    }

    fn finish(&mut self, dir: Dir, res: Result<Outcome, QueueError>, now: Instant) -> bool {
        if let Some(o) = res.as_ref().ok().filter(|o| o.published) {
            self.did_work = true;
            if dir == Dir::Rx {
                self.rx_done = self.rx_done.wrapping_add(u64::from(o.completed));
            }
        }
        let Some(r) = self.ring_mut(dir) else {
            return false;
        };
        match res {
            Ok(out) => {
                if out.published {
                    let decision = if r.priority == Priority::High {
                        // never delayed by coalescing
                        if out.call || r.coalescer.pending() {
                            r.coalescer.flush();
                            Decision::Fire
                        } else {
                            Decision::Nothing
                        }
                    } else {
                        r.coalescer.on_completion(now, out.completed, out.call)
                    };
                    match decision {
                        Decision::Fire => {
                            if let Some(c) = r.call.as_ref() {
                                signal_eventfd(c);
                            }
                            r.stats.calls.inc();
                        }
                        Decision::Defer(_) => {}
                        Decision::Nothing => r.stats.calls_suppressed.inc(),
                    }
                    r.stats.calls_coalesced.add_n(r.coalescer.take_folded());
                } else {
                    // (counters reach the shared atomics only when non-zero:
                    // a busy pass adds no atomic for this one)
                    r.stats.empty_polls.inc();
                }
                out.status == Status::More
            }
            Err(e) => {
                let who = if e.is_guest_fault() {
                    "guest"
                } else {
                    "front-end"
                };
                self.break_ring(dir, who, &e);
                false
            }
        }
    }

    /// Stops ring `dir` as broken, keeping every other one going: counted
    /// (`ring_errors`), the error eventfd signalled, a rate-limited warning,
    /// the port's state and last error set. The front-end's reset (new
    /// kick, table or connection) revives it.
    fn break_ring(&mut self, dir: Dir, who: &str, why: &dyn std::fmt::Display) {
        let vq = self.vq(dir);
        if let Some(r) = self.ring_mut(dir) {
            r.broken = true;
            r.stats.ring_errors.inc();
            if let Some(f) = r.err.as_ref() {
                signal_eventfd(f);
            }
        }
        warn_rl!(
            "port {} queue {vq}: ring stopped ({who} fault): {why}",
            self.port.name
        );
        if let Some(b) = self.port.broken.get(vq) {
            b.store(true, Ordering::Relaxed);
        }
        self.port.set_error(format!("queue {vq}: {why}"));
    }

    /// Stops every ring whose guest memory lost pages under its mapping
    /// (the front-end shrank the file; vhost-mem's SIGBUS handler put zero
    /// pages there): what it reads there is no longer the guest's. As for a
    /// broken ring, a reset by the front-end (new memory table, restart or
    /// reconnect) revives it.
    fn stop_faulted_rings(&mut self) {
        for dir in [Dir::Rx, Dir::Tx, Dir::Ctrl] {
            if self.ring(dir).is_some_and(|r| !r.broken && r.mem.faulted()) {
                self.break_ring(dir, "front-end", &"guest memory shrank under its mapping");
            }
        }
    }

    /// Picks up settings changed through the control socket.
    fn apply_settings(&mut self) {
        let gen = self.port.settings_gen.load(Ordering::Acquire);
        if gen == self.settings_gen {
            return;
        }
        self.settings_gen = gen;
        self.mode = self.port.mode();
        if self.mode != WorkerMode::Adaptive {
            self.spin_until = None;
        }
        let all = self.port.settings_snapshot();
        for dir in [Dir::Rx, Dir::Tx] {
            let s = all.get(self.vq(dir)).copied().unwrap_or_default();
            if let Some(slot) = self.settings.get_mut(dir as usize) {
                *slot = s;
            }
            if let Some(r) = self.ring_mut(dir) {
                if r.coalescer.policy() != policy(s.coalesce) {
                    r.coalescer.set_policy(policy(s.coalesce));
                }
                r.priority = s.priority;
            }
        }
        let served = [Dir::Rx, Dir::Tx].map(|d| {
            self.settings
                .get(d as usize)
                .map_or(Priority::Normal, |s| s.priority)
        });
        let want = if self.settings.iter().any(|s| s.priority == Priority::High) {
            HIGH_PRIORITY_NICE
        } else if served.iter().all(|&p| p == Priority::Low) {
            LOW_PRIORITY_NICE
        } else {
            0
        };
        if want != self.nice {
            let tid = rustix::thread::gettid();
            match rustix::process::setpriority_process(Some(tid), want) {
                Ok(()) => self.nice = want,
                Err(e) => {
                    warn_rl!(
                        "port {} queue pair {}: cannot set thread priority {want}: {e}",
                        self.port.name,
                        self.index
                    );
                    self.nice = want; // do not retry every pass
                }
            }
        }
    }

    fn publish(&mut self) {
        for dir in [Dir::Rx, Dir::Tx, Dir::Ctrl] {
            let vq = self.vq(dir);
            if let (Some(r), Some(c)) = (
                self.rings.get_mut(dir as usize).and_then(Option::as_mut),
                self.port.counters.get(vq),
            ) {
                c.add(&r.stats);
                r.stats = QueueStats::default();
            }
        }
    }

    /// Keeps the back-end fd in epoll only while RX can take packets, so a
    /// readable TAP with no guest buffers does not spin the thread.
    fn arm_backend(&mut self) {
        let Some(fd) = self.qp.backend().rx_fd() else {
            return;
        };
        let want = self.ring(Dir::Rx).is_some_and(|r| !r.broken) && !self.qp.rx_blocked();
        if want != self.backend_armed {
            let op = if want {
                ControlOperation::Add
            } else {
                ControlOperation::Delete
            };
            if self
                .epoll
                .ctl(op, fd, EpollEvent::new(EventSet::IN, TOKEN_BACKEND))
                .is_ok()
            {
                self.backend_armed = want;
            }
        }
    }

    fn handle_cmds(&mut self) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Start(dir, ring, reply) => {
                    let res = self.start(dir, *ring);
                    let _ = reply.send(res);
                }
                Cmd::Stop(dir, reply) => {
                    let base = self.stop(dir);
                    let _ = reply.send(base);
                }
                Cmd::Shutdown => {
                    self.stop(Dir::Rx);
                    self.stop(Dir::Tx);
                    self.stop(Dir::Ctrl);
                    return false;
                }
            }
        }
        true
    }

    fn kick_token(dir: Dir) -> u64 {
        match dir {
            Dir::Rx => TOKEN_RX_KICK,
            Dir::Tx => TOKEN_TX_KICK,
            Dir::Ctrl => TOKEN_CTRL_KICK,
        }
    }

    fn start(&mut self, dir: Dir, ring: RingStart) -> Result<(), String> {
        if !self.sandboxed {
            // before the first guest byte is read (a no-op unless the
            // daemon installed its filters)
            crate::seccomp::enter_worker()?;
            self.sandboxed = true;
        }
        self.stop(dir);
        self.apply_settings();
        if *self.qp.config() != ring.cfg {
            self.qp
                .configure(ring.cfg)
                .map_err(|e| format!("back-end configure failed: {e}"))?;
        }
        if let Some(k) = ring.kick.as_ref() {
            self.epoll
                .ctl(
                    ControlOperation::Add,
                    k.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, Self::kick_token(dir)),
                )
                .map_err(|e| format!("epoll add kick failed: {e}"))?;
        }
        let vq = self.vq(dir);
        if let Some(s) = self.port.sizes.get(vq) {
            s.store(u32::from(ring.queue.size()), Ordering::Relaxed);
        }
        match dir {
            Dir::Rx => self.qp.set_rx(Some(ring.queue)),
            Dir::Tx => self.qp.set_tx(Some(ring.queue)),
            Dir::Ctrl => self.ctrl_queue.replace(ring.queue),
        };
        let settings = self.settings.get(dir as usize).copied().unwrap_or_default();
        let ring = Ring {
            mem: ring.mem,
            kick: ring.kick,
            call: ring.call,
            err: ring.err,
            broken: false,
            stats: QueueStats::default(),
            coalescer: Coalescer::new(policy(settings.coalesce)),
            priority: settings.priority,
        };
        if let Some(slot) = self.rings.get_mut(dir as usize) {
            *slot = Some(ring);
        }
        if let Some(r) = self.port.running.get(vq) {
            r.store(true, Ordering::Relaxed);
        }
        if let Some(b) = self.port.broken.get(vq) {
            b.store(false, Ordering::Relaxed);
        }
        // Process anything already in the ring: its kick may have come
        // before we listened.
        self.process(Instant::now());
        Ok(())
    }

    fn stop(&mut self, dir: Dir) -> Option<u32> {
        let mut ring = self.rings.get_mut(dir as usize)?.take()?;
        if ring.coalescer.pending() {
            // never leave an owed call behind
            ring.coalescer.flush();
            if let Some(c) = ring.call.as_ref() {
                signal_eventfd(c);
            }
            ring.stats.calls.inc();
        }
        if let Some(k) = ring.kick.as_ref() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                k.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        if let Some(c) = self.port.counters.get(self.vq(dir)) {
            c.add(&ring.stats);
        }
        if let Some(r) = self.port.running.get(self.vq(dir)) {
            r.store(false, Ordering::Relaxed);
        }
        let q = match dir {
            Dir::Rx => self.qp.set_rx(None),
            Dir::Tx => self.qp.set_tx(None),
            Dir::Ctrl => self.ctrl_queue.take(),
        };
        self.arm_backend();
        let mut q = q?;
        let driver_avail = q.has_avail(&ring.mem);
        log::debug!(
            "port {} queue {}: stopped at next_avail {} next_used {} (driver has more: {:?}), rx packet waiting: {}",
            self.port.name,
            self.vq(dir),
            q.next_avail(),
            q.next_used(),
            driver_avail,
            dir == Dir::Rx && self.qp.rx_blocked()
        );
        Some(q.base())
    }
}
