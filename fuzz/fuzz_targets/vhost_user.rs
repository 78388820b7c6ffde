//! vhost-user message streams from a hostile front-end into a live port:
//! the input is written raw to the connection (any codes, flags, sizes,
//! payloads, torn messages), then the connection is closed. The connection
//! thread must end without panicking, and the port must stay usable.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vhostd_backend::BackendSpec;
use vhostd_daemon::port::Port;
use vhostd_daemon::worker::WorkerHandle;

fn port() -> &'static (Arc<Port>, Arc<Vec<WorkerHandle>>) {
    static P: OnceLock<(Arc<Port>, Arc<Vec<WorkerHandle>>)> = OnceLock::new();
    P.get_or_init(|| vhostd_daemon::start_port("fuzz", &BackendSpec::Loopback, "pair", 2, true).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let (p, w) = port();
    let (a, b) = UnixStream::pair().unwrap();
    let (p2, w2) = (p.clone(), w.clone());
    let h = std::thread::spawn(move || vhostd_daemon::server::serve_connection(&p2, &w2, b));
    a.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let _ = (&a).write_all(data);
    let _ = a.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    while matches!((&a).read(&mut sink), Ok(n) if n > 0) {}
    drop(a);
    h.join().expect("connection thread panicked");
});
