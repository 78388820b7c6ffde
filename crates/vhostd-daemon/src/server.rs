//! Front-end connections: listen (default), inherited fd, or client mode
//! with reconnect. One connection at a time per port (vhost-user is 1:1); a
//! disconnect resets the port and it waits for the next front-end.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::port::Port;
use crate::proto::PortHandler;
use crate::quirks::Shim;
use crate::warn_rl;
use crate::worker::WorkerHandle;

/// Whether the connection can go on after this error: the message was read
/// whole and answered (or refused), so the stream is still in step.
fn recoverable(e: &VuError) -> bool {
    match e {
        VuError::InvalidParam
        | VuError::InvalidOperation(_)
        | VuError::InactiveFeature(_)
        | VuError::InactiveOperation(_)
        | VuError::BackendInternalError
        | VuError::FeatureMismatch
        | VuError::ReqHandlerError(_) => true,
        VuError::InvalidMessage
        | VuError::InvalidSocketFd(_)
        | VuError::NotUnixSocket
        | VuError::NotStreamSocket
        | VuError::PartialMessage
        | VuError::Disconnected
        | VuError::OversizedMsg
        | VuError::IncorrectFds
        | VuError::SocketConnect(_)
        | VuError::SocketError(_)
        | VuError::SocketBroken(_)
        | VuError::SocketRetry(_)
        | VuError::FrontendInternalError
        | VuError::MemFdCreateError
        | VuError::FileTruncateError
        | VuError::MemFdSealError => false,
    }
}

/// Serves one front-end until it disconnects or breaks the protocol.
pub fn serve_connection(port: &Arc<Port>, workers: &Arc<Vec<WorkerHandle>>, stream: UnixStream) {
    let n = port
        .connections
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1);
    log::info!("port {}: front-end connected (connection {n})", port.name);
    port.connected.store(true, Ordering::Relaxed);
    let handler = Arc::new(Mutex::new(PortHandler::new(port.clone(), workers.clone())));
    let shim = match UnixStream::pair().and_then(|(inner, outer)| {
        Shim::spawn(stream, outer, handler.clone()).map(|shim| (inner, shim))
    }) {
        Ok(pair) => pair,
        Err(e) => {
            log::error!("port {}: cannot set up the connection: {e}", port.name);
            port.connected.store(false, Ordering::Relaxed);
            return;
        }
    };
    let (inner, shim) = shim;
    let mut req = BackendReqHandler::from_stream(inner, handler.clone());
    loop {
        let res = req.handle_request();
        // rings an early SET_VRING_ENABLE (shim thread) left to this thread
        if let Ok(mut h) = handler.lock() {
            h.sync_deferred();
        }
        match res {
            Ok(()) => {}
            Err(VuError::Disconnected) | Err(VuError::PartialMessage) => {
                log::info!("port {}: front-end disconnected", port.name);
                break;
            }
            Err(e) if recoverable(&e) => {
                warn_rl!("port {}: request refused: {e}", port.name);
            }
            Err(e) => {
                warn_rl!("port {}: closing connection: {e}", port.name);
                port.set_error(format!("connection closed: {e}"));
                break;
            }
        }
    }
    // Closing our end stops the shim, which closes the front-end's.
    drop(req);
    shim.join();
    if let Ok(mut h) = handler.lock() {
        h.reset();
    }
    port.connected.store(false, Ordering::Relaxed);
}

/// Accepts front-ends on `listener` forever.
pub fn serve_listener(port: Arc<Port>, workers: Arc<Vec<WorkerHandle>>, listener: UnixListener) {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => serve_connection(&port, &workers, s),
            Err(e) => {
                warn_rl!("port {}: accept failed: {e}", port.name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Connects to a listening front-end at `path`, and again every second
/// after it goes away.
pub fn serve_client(port: Arc<Port>, workers: Arc<Vec<WorkerHandle>>, path: &str) {
    loop {
        match UnixStream::connect(path) {
            Ok(s) => serve_connection(&port, &workers, s),
            Err(e) => log::debug!("port {}: connect {path}: {e}", port.name),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
