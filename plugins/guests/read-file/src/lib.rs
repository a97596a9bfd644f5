//! Test plugin (policy): probes what WASI lets it reach, and denies the
//! statement saying how that went, so a test can check that plugins reach
//! nothing they were not granted. Allows every other statement.
//!
//! - `read PATH`: reads the file (`read N bytes` or `cannot read: ERROR`);
//! - `write PATH`: creates and writes the file (`wrote` or `cannot write:
//!   ERROR`);
//! - `env NAME`: reads the environment variable (`env NAME=VALUE` or `no
//!   env NAME`), and counts the variables it sees (`of N`);
//! - `connect ADDR`: opens a TCP connection (`connected` or `cannot
//!   connect: ERROR`);
//! - `clock N`: reads the clocks, with N rounds of work in between, and
//!   says what they showed below the millisecond (`below a millisecond:
//!   wall W, monotonic M`, in nanoseconds).

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct ReadFile;

impl Policy for ReadFile {
    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        let Some((probe, argument)) = statement.text.split_once(' ') else {
            return Decision::Allow;
        };
        let argument = argument.trim();
        let reason = match probe {
            "read" => match std::fs::read(argument) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(error) => format!("cannot read: {error}"),
            },
            "write" => match std::fs::write(argument, b"from a plugin") {
                Ok(()) => "wrote".to_owned(),
                Err(error) => format!("cannot write: {error}"),
            },
            "env" => {
                let seen = std::env::vars().count();
                match std::env::var(argument) {
                    Ok(value) => format!("env {argument}={value} of {seen}"),
                    Err(_) => format!("no env {argument} of {seen}"),
                }
            }
            "connect" => match std::net::TcpStream::connect(argument) {
                Ok(_) => "connected".to_owned(),
                Err(error) => format!("cannot connect: {error}"),
            },
            "clock" => {
                let rounds: u64 = argument.parse().unwrap_or(0);
                let started = std::time::Instant::now();
                let mut work = 0u64;
                for round in 0..rounds {
                    work = std::hint::black_box(work.wrapping_mul(31).wrapping_add(round));
                }
                let monotonic = started.elapsed().as_nanos() % 1_000_000;
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_nanos() % 1_000_000);
                format!("below a millisecond: wall {wall}, monotonic {monotonic}")
            }
            _ => return Decision::Allow,
        };
        Decision::deny("read-file", reason)
    }
}

sluice_plugin::register_policy!(ReadFile);
