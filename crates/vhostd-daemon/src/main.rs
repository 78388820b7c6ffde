//! `vhostd`: see `vhostd --help` and README.md.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = vhostd_daemon::Args::parse();
    if let Err(e) = vhostd_daemon::run(args) {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("vhostd: {msg}");
        std::process::exit(1);
    }
}
