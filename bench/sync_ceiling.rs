//! bench/sync_ceiling.rs: how many records a second eight clients can have
//! made durable on this disk, with nothing else in the way.
//!
//! It answers one question about `fsync = "always"`: is the target (at
//! least 75 % of the audit-off TPS with `pgbench -c 8`) within reach of any
//! gateway on this machine? Each client appends a 400-byte record to one
//! file and waits until it is synced (`fdatasync`) before its next record,
//! as a statement waits for its audit record; a single syncer thread syncs
//! whatever has been written since its last sync (group commit across
//! clients, the trail's scheme); `WORK_US` is the rest of a transaction,
//! spent asleep, so that it takes no CPU from the syncs. No SQL, no
//! gateway, no hashing: the figure is an upper bound for the trail.
//!
//! Usage (the file goes under target/, on the same disk as the trails):
//!   rustc -O -o target/sync_ceiling bench/sync_ceiling.rs
//!   target/sync_ceiling [CLIENTS=8] [WORK_US=0] [SECONDS=5] [SYNCERS=1]
//!
//! `SYNCERS` > 1 lets that many syncs run at once (a syncer starts one as
//! soon as records are written that no running sync covers): pipelined
//! group commit.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const RECORD: usize = 400;
const FILE_SIZE: u64 = 256 << 20;

#[derive(Default)]
struct Trail {
    /// Records written so far (the next record's number is this plus one).
    written: u64,
    /// Records known to be on the disk.
    durable: u64,
    /// The highest record a running sync covers.
    covered: u64,
    syncs: u64,
    stop: bool,
}

fn main() {
    let arg = |n: usize, default: u64| -> u64 {
        std::env::args()
            .nth(n)
            .map(|a| a.parse().expect("a number"))
            .unwrap_or(default)
    };
    let clients = arg(1, 8);
    let work = Duration::from_micros(arg(2, 0));
    let seconds = arg(3, 5);
    let syncers = arg(4, 1);

    let path = "target/sync_ceiling.data";
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("open the data file");
    // Zeros written first, as PostgreSQL does its WAL: records then land
    // in allocated, written blocks, and a sync flushes data alone.
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..FILE_SIZE / zeros.len() as u64 {
        file.write_all_at(&zeros, chunk * zeros.len() as u64)
            .expect("write zeros");
    }
    file.sync_all().expect("sync the zeros");
    let file = Arc::new(file);
    let shared = Arc::new((Mutex::new(Trail::default()), Condvar::new()));

    let syncer_threads: Vec<_> = (0..syncers)
        .map(|_| {
            let (file, shared) = (Arc::clone(&file), Arc::clone(&shared));
            std::thread::spawn(move || syncer(&file, &shared))
        })
        .collect();
    let waits = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let client_threads: Vec<_> = (0..clients)
        .map(|_| {
            let (file, shared, waits) =
                (Arc::clone(&file), Arc::clone(&shared), Arc::clone(&waits));
            std::thread::spawn(move || client(&file, &shared, work, &waits))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    {
        let (lock, wake) = &*shared;
        lock.lock().unwrap().stop = true;
        wake.notify_all();
    }
    let done: u64 = client_threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = started.elapsed().as_secs_f64();
    for thread in syncer_threads {
        thread.join().unwrap();
    }
    let syncs = shared.0.lock().unwrap().syncs;
    let mut waits = waits.lock().unwrap();
    waits.sort();
    let percentile = |p: usize| {
        waits
            .get(waits.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "clients={clients} work={}us syncers={syncers}: {:.0} records/s durable, {:.0} syncs/s, {:.1} records per sync, wait for the sync median {:?} p90 {:?}",
        work.as_micros(),
        done as f64 / elapsed,
        syncs as f64 / elapsed,
        done as f64 / syncs.max(1) as f64,
        percentile(50),
        percentile(90),
    );
    drop(file);
    let _ = std::fs::remove_file(path);
}

/// Syncs whatever was written that no running sync covers, until stopped.
fn syncer(file: &File, shared: &(Mutex<Trail>, Condvar)) {
    let (lock, wake) = shared;
    let mut trail = lock.lock().unwrap();
    loop {
        while !trail.stop && trail.written <= trail.covered {
            trail = wake.wait(trail).unwrap();
        }
        if trail.stop {
            return;
        }
        let target = trail.written;
        trail.covered = target;
        drop(trail);
        file.sync_data().expect("fdatasync");
        trail = lock.lock().unwrap();
        trail.syncs += 1;
        trail.durable = trail.durable.max(target);
        wake.notify_all();
    }
}

/// Writes a record, waits until it is durable, spends `work`; returns how
/// many records it had made durable when stopped.
fn client(
    file: &File,
    shared: &(Mutex<Trail>, Condvar),
    work: Duration,
    waits: &Mutex<Vec<Duration>>,
) -> u64 {
    let (lock, wake) = shared;
    let record = [b'x'; RECORD];
    let mut done = 0;
    let mut mine = Vec::new();
    loop {
        let asked = Instant::now();
        let mut trail = lock.lock().unwrap();
        if trail.stop {
            break;
        }
        let seq = trail.written + 1;
        let at = (seq - 1) * RECORD as u64 % FILE_SIZE;
        file.write_all_at(&record, at).expect("write a record");
        trail.written = seq;
        wake.notify_all();
        while !trail.stop && trail.durable < seq {
            trail = wake.wait(trail).unwrap();
        }
        if trail.stop {
            break;
        }
        drop(trail);
        mine.push(asked.elapsed());
        done += 1;
        if !work.is_zero() {
            std::thread::sleep(work);
        }
    }
    waits.lock().unwrap().extend(mine);
    done
}
