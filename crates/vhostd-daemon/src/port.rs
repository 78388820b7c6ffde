//! A port: one vhost-user device, its workers and its counters.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use vhostd_api::{
    PortReport, PortState, QueueCounters, QueueReport, QueueSettings, QueueStats, WorkerMode,
};
use vhostd_backend::BackendSpec;

/// Shared, thread-safe view of a port: written by the connection handler and
/// workers, read by the control server. The data path only touches atomics.
#[derive(Debug)]
pub struct Port {
    /// Port name.
    pub name: String,
    /// Back-end.
    pub backend: BackendSpec,
    /// vhost-user socket path.
    pub socket: String,
    /// Queue pairs.
    pub queue_pairs: usize,
    /// A control virtqueue (index 2 * queue_pairs) is served (`--ctrl-vq`).
    pub ctrl_vq: bool,
    /// Counters per virtqueue (RX = 2i, TX = 2i + 1).
    pub counters: Vec<QueueCounters>,
    /// Whether a worker runs each virtqueue.
    pub running: Vec<AtomicBool>,
    /// Ring size of each virtqueue.
    pub sizes: Vec<AtomicU32>,
    /// Acked virtio features.
    pub features: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Front-end connected.
    pub connected: AtomicBool,
    /// Per virtqueue: a ring error stopped it (cleared when it starts again).
    pub broken: Vec<AtomicBool>,
    /// Last error text (control plane only).
    pub last_error: Mutex<Option<String>>,
    /// Run-time settings per virtqueue (control plane writes, workers read
    /// when `settings_gen` moves: one atomic load per worker pass).
    pub settings: Mutex<Vec<QueueSettings>>,
    /// Bumped on every settings change.
    pub settings_gen: AtomicU64,
    /// How the workers wait for work (changes bump `settings_gen`).
    pub mode: Mutex<WorkerMode>,
}

impl Port {
    /// Number of data virtqueues (RX and TX of every pair); the control
    /// queue, when served, has this index.
    pub fn data_queues(&self) -> usize {
        self.queue_pairs.saturating_mul(2)
    }

    /// A port with zeroed counters.
    pub fn new(
        name: String,
        backend: BackendSpec,
        socket: String,
        queue_pairs: usize,
        ctrl_vq: bool,
    ) -> Self {
        let n = queue_pairs
            .saturating_mul(2)
            .saturating_add(usize::from(ctrl_vq));
        Port {
            name,
            backend,
            socket,
            queue_pairs,
            ctrl_vq,
            counters: (0..n).map(|_| QueueCounters::default()).collect(),
            running: (0..n).map(|_| AtomicBool::new(false)).collect(),
            sizes: (0..n).map(|_| AtomicU32::new(0)).collect(),
            features: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            broken: (0..n).map(|_| AtomicBool::new(false)).collect(),
            last_error: Mutex::new(None),
            settings: Mutex::new(vec![QueueSettings::default(); n]),
            settings_gen: AtomicU64::new(0),
            mode: Mutex::new(WorkerMode::default()),
        }
    }

    /// Records an error for `vhostctl stats`.
    pub fn set_error(&self, msg: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
    }

    /// Applies `f` to the settings of queue `queue` (all when None).
    /// Returns false if the queue does not exist.
    pub fn update_settings(&self, queue: Option<u32>, f: impl Fn(&mut QueueSettings)) -> bool {
        let Ok(mut s) = self.settings.lock() else {
            return false;
        };
        match queue {
            None => s.iter_mut().for_each(&f),
            Some(q) => match usize::try_from(q).ok().and_then(|q| s.get_mut(q)) {
                Some(qs) => f(qs),
                None => return false,
            },
        }
        self.settings_gen.fetch_add(1, Ordering::Release);
        true
    }

    /// Applies `f` to the settings of every data queue `pred` selects.
    pub fn update_settings_where(
        &self,
        pred: impl Fn(usize) -> bool,
        f: impl Fn(&mut QueueSettings),
    ) {
        if let Ok(mut s) = self.settings.lock() {
            let data = self.data_queues();
            for (i, qs) in s.iter_mut().enumerate().take(data) {
                if pred(i) {
                    f(qs);
                }
            }
            self.settings_gen.fetch_add(1, Ordering::Release);
        }
    }

    /// Sets the worker mode.
    pub fn set_mode(&self, mode: WorkerMode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
        self.settings_gen.fetch_add(1, Ordering::Release);
    }

    /// The worker mode.
    pub fn mode(&self) -> WorkerMode {
        self.mode.lock().map(|m| *m).unwrap_or_default()
    }

    /// Current settings of every queue.
    pub fn settings_snapshot(&self) -> Vec<QueueSettings> {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Snapshot for the control socket.
    pub fn report(&self) -> PortReport {
        let mut total = QueueStats::default();
        let settings = self.settings_snapshot();
        let queues = self
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let stats = c.snapshot();
                total.accumulate(&stats);
                QueueReport {
                    name: if i == self.data_queues() {
                        "ctrl".to_string()
                    } else {
                        format!("{}{}", if i % 2 == 0 { "rx" } else { "tx" }, i / 2)
                    },
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    running: self
                        .running
                        .get(i)
                        .is_some_and(|r| r.load(Ordering::Relaxed)),
                    size: self.sizes.get(i).map_or(0, |s| s.load(Ordering::Relaxed)),
                    settings: settings.get(i).copied().unwrap_or_default(),
                    stats,
                }
            })
            .collect::<Vec<_>>();
        let state = if self.broken.iter().any(|b| b.load(Ordering::Relaxed)) {
            PortState::Broken
        } else if queues.iter().any(|q| q.running) {
            PortState::Running
        } else if self.connected.load(Ordering::Relaxed) {
            PortState::Connected
        } else {
            PortState::Waiting
        };
        PortReport {
            name: self.name.clone(),
            backend: self.backend.to_string(),
            socket: self.socket.clone(),
            state,
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            features: self.features.load(Ordering::Relaxed),
            mode: self.mode(),
            queue_pairs: u32::try_from(self.queue_pairs).unwrap_or(u32::MAX),
            connections: self.connections.load(Ordering::Relaxed),
            queues,
            total,
        }
    }
}
