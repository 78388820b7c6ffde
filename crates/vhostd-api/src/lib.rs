//! Control protocol of vhostd, shared by the daemon and `vhostctl`.
//!
//! One JSON object per line in each direction over a unix stream socket.
//! Every request carries `"v": 1`; a daemon answers requests of a version it
//! does not know with an error. See docs/CONTROL-API.md.
//!
//! The per-queue counters are declared once here ([`QueueStats`] for
//! snapshots, [`QueueCounters`] for the live atomics the data path bumps),
//! so the daemon, the CLI and docs/METRICS.md cannot drift apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this crate.
pub const API_VERSION: u32 = 1;

/// Event counters that wrap instead of overflowing (a `u64` counting a
/// billion events a second wraps after 584 years): the data path counts
/// with these, so no counter arithmetic can panic in a debug build or be
/// silently unchecked in an audited crate (`clippy::arithmetic_side_effects`).
pub trait Count {
    /// Adds one.
    fn inc(&mut self);
    /// Adds `n`.
    fn add_n(&mut self, n: u64);
}

impl Count for u64 {
    #[inline]
    fn inc(&mut self) {
        *self = self.wrapping_add(1);
    }

    #[inline]
    fn add_n(&mut self, n: u64) {
        *self = self.wrapping_add(n);
    }
}

macro_rules! queue_counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// A snapshot of one queue's counters (cumulative since the port was made).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct QueueStats {
            $( $(#[doc = $doc])* #[serde(default)] pub $name: u64, )*
        }

        /// Live counters of one queue: bumped by the data path once per batch
        /// with `Relaxed` adds, read by the control server. Never reset.
        #[derive(Debug, Default)]
        pub struct QueueCounters {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        impl QueueStats {
            /// Counter names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Adds every counter of `other`.
            pub fn accumulate(&mut self, other: &QueueStats) {
                $( self.$name = self.$name.wrapping_add(other.$name); )*
            }

            /// Values in declaration order (for tables).
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name),*]
            }
        }

        impl QueueCounters {
            /// Publishes a batch of locally counted events.
            pub fn add(&self, s: &QueueStats) {
                $( if s.$name != 0 { self.$name.fetch_add(s.$name, Ordering::Relaxed); } )*
            }

            /// Reads all counters.
            pub fn snapshot(&self) -> QueueStats {
                QueueStats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

queue_counters! {
    /// Frames moved through this queue (RX: delivered to the guest; TX: taken from it).
    packets,
    /// Frame bytes moved (virtio-net header excluded).
    bytes,
    /// Frames moved with a GSO header (TSO/UFO: up to 64 KiB, segmented
    /// by the receiving side).
    gso_packets,
    /// Frames dropped, all reasons (the sum of the `dropped_*` counters).
    drops,
    /// Kicks (driver -> device notifications) received.
    kicks,
    /// Calls (device -> driver interrupts) sent.
    calls,
    /// Calls not sent because the driver suppressed them (EVENT_IDX or NO_INTERRUPT).
    calls_suppressed,
    /// Calls the driver wanted that host-side coalescing folded into a later call.
    calls_coalesced,
    /// Used-ring bursts published (a burst is one used.idx update).
    bursts,
    /// Chains with bad buffers (address, indirect, order, length), completed with length 0.
    bad_chains,
    /// TX: chain shorter than the virtio-net header, or with device-writable buffers.
    dropped_malformed,
    /// TX: frame longer than the largest frame (64 KiB + header).
    dropped_oversize,
    /// TX: virtio-net header rejected (GSO type, csum offsets, unacked offload).
    dropped_bad_header,
    /// TX: the back-end refused the frame (full, link down, error).
    dropped_backend,
    /// RX: frame larger than the buffers the guest posts (non-mergeable) or than the ring.
    dropped_too_big,
    /// RX: frame from the back-end shorter than the virtio-net header.
    dropped_runt,
    /// Times the ring was found broken (index jump, loop) and stopped.
    ring_errors,
    /// Passes over this queue that found nothing to move (TX: no chain;
    /// RX: no frame or no buffer). Against `bursts`, how often a polling
    /// worker waits on the other side: a core that is the bottleneck
    /// almost never finds its queue empty.
    empty_polls,
    /// RX: frames delivered with their header compared with the buffer's
    /// bytes and written only if different (the way the RX header tuner
    /// chose for this queue, vhostd_net::tune); against `packets`, the
    /// share of time the queue ran that way.
    header_compared,
}

/// The queue's counters under the names of the virtio 1.4 device
/// statistics (VIRTIO_NET_F_DEVICE_STATS, §5.1.6.5.7), per RX or TX queue:
/// notifications = kicks, interrupts = calls.
pub fn device_stats(rx: bool, s: &QueueStats) -> Vec<(&'static str, u64)> {
    if rx {
        vec![
            ("rx_notifications", s.kicks),
            ("rx_packets", s.packets),
            ("rx_bytes", s.bytes),
            ("rx_interrupts", s.calls),
            ("rx_drops", s.drops),
            ("rx_drop_overruns", s.dropped_too_big),
        ]
    } else {
        vec![
            ("tx_notifications", s.kicks),
            ("tx_packets", s.packets),
            ("tx_bytes", s.bytes),
            ("tx_interrupts", s.calls),
            ("tx_drops", s.drops),
            (
                "tx_drop_malformed",
                s.dropped_malformed
                    .wrapping_add(s.dropped_bad_header)
                    .wrapping_add(s.bad_chains),
            ),
        ]
    }
}

/// State of a port as the control socket reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// No front-end connected.
    Waiting,
    /// A front-end is connected; no queue is running.
    Connected,
    /// At least one queue is running.
    Running,
    /// A queue hit a ring error; the port's queues are stopped until the
    /// front-end resets them (reconnect, or a new `SET_VRING_KICK`).
    Broken,
}

/// Host-side interrupt coalescing of one queue (docs/COALESCING.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CoalescePolicy {
    /// Every call the driver wants is sent at once.
    #[default]
    Off,
    /// Hold calls until `frames` completions or `usecs` microseconds.
    Fixed {
        /// Time bound (microseconds).
        usecs: u32,
        /// Completion bound.
        frames: u32,
    },
    /// Bounds chosen from the load (immediate at low rates).
    Adaptive,
}

impl std::fmt::Display for CoalescePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoalescePolicy::Off => f.write_str("off"),
            CoalescePolicy::Fixed { usecs, frames } => write!(f, "{usecs}us/{frames}f"),
            CoalescePolicy::Adaptive => f.write_str("adaptive"),
        }
    }
}

/// Interrupt priority class of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Default.
    #[default]
    Normal,
    /// Serviced first in every worker pass; its calls are never coalesced;
    /// its worker thread runs at a higher scheduling priority.
    High,
    /// A tenant the operator puts behind the others: when every queue a
    /// worker serves is low (and none high), the worker thread runs at the
    /// lowest scheduling priority (nice 19), so it gets the CPU that
    /// normal workers leave (docs/THREAT-MODEL.md, isolation).
    Low,
}

/// How a port's workers wait for work (docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMode {
    /// Sleep on kick eventfds; kicks enabled whenever a ring is idle.
    Event,
    /// Busy-poll the rings with kicks disabled (burns a core per worker).
    Poll,
    /// Poll while work keeps arriving, up to a bounded spin, then re-arm
    /// kicks and sleep (kernel vhost-net's busy-loop idea).
    #[default]
    Adaptive,
}

/// Per-queue settings changeable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QueueSettings {
    /// Coalescing policy.
    pub coalesce: CoalescePolicy,
    /// Priority class.
    pub priority: Priority,
}

/// One queue in a stats reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReport {
    /// `rx0`, `tx0`, `rx1`, ...
    pub name: String,
    /// Virtqueue index (RX = 2*pair, TX = 2*pair + 1).
    pub index: u32,
    /// Whether a worker is processing it now.
    pub running: bool,
    /// Ring size (0 before `SET_VRING_NUM`).
    pub size: u32,
    /// Run-time settings.
    #[serde(default)]
    pub settings: QueueSettings,
    /// Counters.
    #[serde(flatten)]
    pub stats: QueueStats,
}

/// One port in a stats reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReport {
    /// Port name (`--name`).
    pub name: String,
    /// Back-end description (`tap:vm0`, `loopback`).
    pub backend: String,
    /// vhost-user socket path.
    pub socket: String,
    /// Port state.
    pub state: PortState,
    /// Last ring or protocol error, if any.
    pub last_error: Option<String>,
    /// Virtio features acked by the driver.
    pub features: u64,
    /// How the workers wait for work.
    #[serde(default)]
    pub mode: WorkerMode,
    /// Queue pairs configured (`--queues`).
    pub queue_pairs: u32,
    /// Front-end connections accepted so far.
    pub connections: u64,
    /// Per-queue counters.
    pub queues: Vec<QueueReport>,
    /// Sum over queues.
    pub total: QueueStats,
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version ([`API_VERSION`]).
    pub v: u32,
    /// What to do.
    #[serde(flatten)]
    pub cmd: Command,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Counters of every port (or of one).
    Stats {
        /// Only this port.
        #[serde(default)]
        port: Option<String>,
    },
    /// Daemon version and ports.
    Version,
    /// Set the coalescing policy of one queue or of all queues of a port.
    Coalesce {
        /// Port name.
        port: String,
        /// Virtqueue index; all queues when absent.
        #[serde(default)]
        queue: Option<u32>,
        /// The policy.
        policy: CoalescePolicy,
    },
    /// Set how a port's workers wait for work.
    SetMode {
        /// Port name.
        port: String,
        /// The mode.
        mode: WorkerMode,
    },
    /// Set the priority class of one queue (or all queues) of a port.
    SetPriority {
        /// Port name.
        port: String,
        /// Virtqueue index; all queues when absent.
        #[serde(default)]
        queue: Option<u32>,
        /// The class.
        priority: Priority,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// Success.
    pub ok: bool,
    /// Error text when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ports, for `stats`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortReport>,
    /// Daemon version, for `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Response {
    /// An error response.
    pub fn error(msg: impl Into<String>) -> Self {
        Response {
            v: API_VERSION,
            ok: false,
            error: Some(msg.into()),
            ports: Vec::new(),
            version: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn test_counters_wrap_instead_of_overflowing() {
        let mut c = u64::MAX - 1;
        c.inc();
        assert_eq!(c, u64::MAX);
        c.inc();
        assert_eq!(c, 0);
        c.add_n(u64::MAX);
        c.add_n(3);
        assert_eq!(c, 2);
    }

    #[test]
    fn test_request_stats_roundtrip_json() {
        let r = Request {
            v: 1,
            cmd: Command::Stats {
                port: Some("p".into()),
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"v":1,"cmd":"stats","port":"p"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let bare: Request = serde_json::from_str(r#"{"v":1,"cmd":"stats"}"#).unwrap();
        assert_eq!(bare.cmd, Command::Stats { port: None });
    }

    #[test]
    fn test_coalesce_request_json() {
        let r = Request {
            v: 1,
            cmd: Command::Coalesce {
                port: "p".into(),
                queue: Some(1),
                policy: CoalescePolicy::Fixed {
                    usecs: 50,
                    frames: 32,
                },
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"v":1,"cmd":"coalesce","port":"p","queue":1,"policy":{"mode":"fixed","usecs":50,"frames":32}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }

    #[test]
    fn test_device_stats_names_follow_virtio_1_4() {
        let s = QueueStats {
            kicks: 1,
            calls: 2,
            packets: 3,
            dropped_malformed: 4,
            bad_chains: 1,
            ..Default::default()
        };
        let rx = device_stats(true, &s);
        assert_eq!(rx[0], ("rx_notifications", 1));
        assert_eq!(rx[3], ("rx_interrupts", 2));
        let tx = device_stats(false, &s);
        assert_eq!(tx[5], ("tx_drop_malformed", 5));
    }

    #[test]
    fn test_queue_counters_add_and_snapshot() {
        let c = QueueCounters::default();
        c.add(&QueueStats {
            packets: 3,
            bytes: 100,
            ..Default::default()
        });
        c.add(&QueueStats {
            packets: 1,
            kicks: 2,
            ..Default::default()
        });
        let s = c.snapshot();
        assert_eq!((s.packets, s.bytes, s.kicks), (4, 100, 2));
        assert_eq!(QueueStats::NAMES.len(), s.values().len());
    }

    #[test]
    fn test_queue_report_json_has_required_keys() {
        let q = QueueReport {
            name: "rx0".into(),
            index: 0,
            running: true,
            size: 256,
            settings: QueueSettings::default(),
            stats: QueueStats::default(),
        };
        let v = serde_json::to_value(&q).unwrap();
        for k in ["packets", "bytes", "kicks", "calls", "drops"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
}
