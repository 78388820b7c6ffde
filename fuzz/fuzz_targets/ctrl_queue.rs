//! Control-queue commands (`--ctrl-vq`) with arbitrary class, command and
//! data: no panic; a coalescing policy read back is one that was accepted.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vhostd_backend::BackendSpec;
use vhostd_daemon::port::Port;

fn port() -> &'static Arc<Port> {
    static P: OnceLock<Arc<Port>> = OnceLock::new();
    P.get_or_init(|| Arc::new(Port::new("fuzz".into(), BackendSpec::Loopback, "x".into(), 2, true)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&class, rest)) = data.split_first() else { return };
    let Some((&cmd, body)) = rest.split_first() else { return };
    let r = vhostd_daemon::ctrl::command(port(), class, cmd, body);
    assert!(r.ack <= 1);
    assert!(r.len <= r.data.len());
    for s in port().settings_snapshot() {
        if let vhostd_api::CoalescePolicy::Fixed { usecs, frames } = s.coalesce {
            assert!(usecs <= 1_000_000 && frames <= 65536);
        }
    }
});
