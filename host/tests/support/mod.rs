//! What the tests that run the `sluice` binary share: the binary, child
//! processes that never outlive a failed test, signals, ports.

#![allow(dead_code)] // each test binary uses its own part

use std::process::Child;
use std::time::{Duration, Instant};

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Kills the child if a test fails before it is waited for.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn signal(child: &Child, signal: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `sluice ARGS`: whether it succeeded, and its stdout then stderr.
pub fn sluice(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(SLUICE)
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Starts `sluice serve -c CONFIG` and waits until it listens on `port`.
pub fn start_sluice(config: &std::path::Path, port: u16) -> Reaped {
    serve(config, port, "warn", std::process::Stdio::inherit())
}

/// [`start_sluice`] logging at `info` into the file `log`.
#[allow(dead_code)] // Not every test binary reads the log.
pub fn start_sluice_logging_to(
    config: &std::path::Path,
    port: u16,
    log: &std::path::Path,
) -> Reaped {
    let log = std::fs::File::create(log).unwrap();
    serve(config, port, "info", log.into())
}

fn serve(config: &std::path::Path, port: u16, level: &str, stderr: std::process::Stdio) -> Reaped {
    let child = Reaped(
        std::process::Command::new(SLUICE)
            .args(["serve", "-c", config.to_str().unwrap()])
            .env("SLUICE_LOG", level)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "sluice");
    child
}

/// Runs `psql CONNINFO -XAtc SQL` with `password`, as a client would.
pub fn psql(conninfo: &str, password: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([conninfo, "-XAtc", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap()
}

/// The config of a gateway on `port` in front of `upstream` with one
/// principal, `admin` (group `admins`, password `token`), the Luhn masker,
/// and `audit`: the `[audit]` tables.
pub fn audited_gateway_config(port: u16, upstream: &str, token: &str, audit: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\n\
         [upstream]\nurl = \"{upstream}\"\n\
         [[principals]]\nname = \"admin\"\ngroups = [\"admins\"]\ntoken_verifier = \"{}\"\n\
         {audit}\
         [[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n",
        sluice::auth::scram::make_verifier(token, 64),
    )
}
