//! A Kafka-protocol broker for tests: `tansu`, started on a loopback port of its own and
//! keeping its topics in memory. Shared by the projections' and the CLI's tests
//! (`#[path]`-included).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `tansu` broker on loopback, stopped when dropped.
pub struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let program = std::env::var("TANSU").unwrap_or_else(|_| "tansu".to_owned());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&program)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the Kafka tests run the tansu broker ({program}: {e}); install it with \
                     `cargo install tansu --locked --features dynostore` (.ci/run does) or \
                     point TANSU at it"
                )
            });
        let broker = Broker { child, port };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not listen on port {port} within 15 s");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
