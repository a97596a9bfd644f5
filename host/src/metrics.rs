//! What the gateway counts, and its Prometheus text rendering for the admin
//! port's `/metrics`.
//!
//! The data path only bumps atomics it already keeps (sessions, plugin
//! calls and faults, audit records) and, for latencies, a sharded
//! [`LatencyHistogram`]: nothing on it takes a lock or formats a label.
//! The scrape reads those in place, through a prometheus-client
//! [`Collector`], so a scrape sees the plugins in force at that moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::gateway::{Phase, Shared};

/// No exemplar labels: histograms here carry no exemplars.
type NoLabels = Vec<(String, String)>;

/// Upper bounds of the latency buckets, in seconds: from a warm plugin
/// call (a microsecond or two) to a synced audit commit on a slow disk.
const BUCKETS: [f64; 20] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Threads observing at once each count into a shard of their own, so a
/// histogram on every plugin call does not bounce one cache line between
/// cores. (The plugin pools shard the same way.)
pub(crate) const SHARDS: usize = 8;

/// The current thread's shard, fixed for its life.
pub(crate) fn shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// A latency histogram cheap enough for the data path: an observation is
/// a bucket search and two relaxed atomic adds on the thread's own shard.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    shards: [HistogramShard; SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct HistogramShard {
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// The bucket bounds in nanoseconds, for the search.
fn bucket_of(nanos: u64) -> usize {
    const BOUNDS: [u64; BUCKETS.len()] = {
        let mut bounds = [0u64; BUCKETS.len()];
        let mut i = 0;
        while i < BUCKETS.len() {
            bounds[i] = (BUCKETS[i] * 1e9) as u64;
            i += 1;
        }
        bounds
    };
    BOUNDS.partition_point(|&bound| bound < nanos)
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let shard = &self.shards[shard()];
        shard.counts[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and the count of each bucket by its upper
    /// bound — not cumulative, and the last bound `f64::MAX` for +Inf, as
    /// the OpenMetrics encoder takes them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut counts = [0u64; BUCKETS.len() + 1];
        let mut sum_nanos = 0u64;
        for shard in &self.shards {
            for (total, count) in counts.iter_mut().zip(&shard.counts) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
        }
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .chain([&f64::MAX])
            .copied()
            .zip(counts)
            .collect();
        (sum_nanos as f64 / 1e9, counts.iter().sum(), buckets)
    }
}

/// Statements by what was decided about them.
#[derive(Debug, Default)]
pub struct StatementCounters {
    /// The policies let it through.
    pub allowed: AtomicU64,
    /// A policy, or an approver, refused it.
    pub denied: AtomicU64,
    /// Refused for a failure: a plugin fault, a limit, the audit trail.
    pub failed: AtomicU64,
    /// No policy plugin is loaded: nothing judged it.
    pub unjudged: AtomicU64,
}

/// Approval requests by how they ended.
#[derive(Debug, Default)]
pub struct ApprovalCounters {
    pub approved: AtomicU64,
    pub denied: AtomicU64,
    pub expired: AtomicU64,
    /// Cancelled by the client, or the client left, before an answer.
    pub withdrawn: AtomicU64,
    /// Approvals no approver could give, by why (in the order of
    /// [`crate::audit::NOT_OBTAINED`]): no approval plugin, two groups
    /// asked of one query, the request failed.
    pub not_obtained: [AtomicU64; crate::audit::NOT_OBTAINED.len()],
}

impl ApprovalCounters {
    /// Counts an approval no approver could give, `outcome` one of
    /// [`crate::audit::NOT_OBTAINED`].
    pub fn count_not_obtained(&self, outcome: &str) {
        if let Some(at) = crate::audit::NOT_OBTAINED
            .iter()
            .position(|o| *o == outcome)
        {
            self.not_obtained[at].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A registry that renders the gateway's state at each scrape.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GatewayCollector(shared)));
    registry
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a collector's error would be a bug
    // worth seeing in the scrape rather than a panic.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        text.push_str(&format!("# encoding failed: {error}\n"));
    }
    text
}

struct GatewayCollector(Arc<Shared>);

impl std::fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayCollector")
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One counter family, a value per label set.
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let shared = &self.0;
        let counters_ = &shared.counters;
        let e = &mut encoder;

        gauge(
            e,
            "sluice_ready",
            "1 while the gateway serves new sessions (see /readyz)",
            i64::from(readiness(shared).is_ok()),
        )?;
        counters(
            e,
            "sluice_sessions",
            "Client connections, by what became of them",
            "outcome",
            [
                ("accepted", load(&counters_.sessions_accepted)),
                ("refused", load(&counters_.sessions_refused)),
            ],
        )?;
        gauge(
            e,
            "sluice_sessions_active",
            "Client connections open now",
            counters_.active_sessions.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            e,
            "sluice_failed_logins",
            "Logins refused: bad credentials, unknown users, lockouts",
            load(&counters_.failed_logins),
        )?;
        let statements = &counters_.statements;
        counters(
            e,
            "sluice_statements",
            "Statements (query strings and Binds) by verdict",
            "verdict",
            [
                ("allow", load(&statements.allowed)),
                ("deny", load(&statements.denied)),
                ("error", load(&statements.failed)),
                ("unjudged", load(&statements.unjudged)),
            ],
        )?;
        let approvals = &counters_.approvals;
        counters(
            e,
            "sluice_approvals",
            "Statements that needed approval, by outcome (approved, denied, expired, withdrawn; where no approver could answer: no-approval-plugin, two-groups, request-failed)",
            "outcome",
            [
                ("approved", load(&approvals.approved)),
                ("denied", load(&approvals.denied)),
                ("expired", load(&approvals.expired)),
                ("withdrawn", load(&approvals.withdrawn)),
            ]
            .into_iter()
            .chain(
                crate::audit::NOT_OBTAINED
                    .iter()
                    .zip(&approvals.not_obtained)
                    .map(|(outcome, count)| (*outcome, load(count))),
            ),
        )?;

        let plugins = shared.plugins.current();
        let loaded: Vec<_> = plugins.plugins().collect();
        {
            let mut metric = e.encode_descriptor(
                "sluice_plugin_calls",
                "Calls into each plugin (all its versions)",
                None,
                MetricType::Counter,
            )?;
            for plugin in &loaded {
                let labels = [
                    ("plugin", plugin.name.as_str()),
                    ("hook", plugin.hook.name()),
                ];
                ConstCounter::new(plugin.stats.calls()).encode(metric.encode_family(&labels)?)?;
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "sluice_plugin_faults",
                "Plugin calls that failed (and failed closed), by kind",
                None,
                MetricType::Counter,
            )?;
            for plugin in &loaded {
                let stats = &plugin.stats;
                for (kind, count) in [
                    ("trap", &stats.traps),
                    ("deadline", &stats.deadlines),
                    ("memory", &stats.memory),
                    ("invalid-answer", &stats.invalid_answers),
                    ("busy", &stats.busy),
                ] {
                    let labels = [("plugin", plugin.name.as_str()), ("kind", kind)];
                    ConstCounter::new(load(count)).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "sluice_plugin_call_duration_seconds",
                "Time per plugin call, from taking an instance to giving it back",
                None,
                MetricType::Histogram,
            )?;
            for plugin in &loaded {
                let labels = [
                    ("plugin", plugin.name.as_str()),
                    ("hook", plugin.hook.name()),
                ];
                let (sum, count, buckets) = plugin.stats.latency.snapshot();
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabels>(sum, count, &buckets, None)?;
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "sluice_masked_values",
                "Result values a masking plugin changed",
                None,
                MetricType::Counter,
            )?;
            for plugin in loaded
                .iter()
                .filter(|p| p.hook == crate::config::Hook::Masking)
            {
                let labels = [("plugin", plugin.name.as_str())];
                ConstCounter::new(load(&plugin.stats.values_masked))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        counters(
            e,
            "sluice_plugin_reloads",
            "Plugin reloads, by result",
            "result",
            [
                ("applied", load(&shared.plugins.reloads_applied)),
                ("rejected", load(&shared.plugins.reloads_rejected)),
            ],
        )?;

        if let Some(stats) = shared.audit.stats() {
            counter(
                e,
                "sluice_audit_records",
                "Records written to the audit trail",
                stats.records,
            )?;
            counter(
                e,
                "sluice_audit_commits",
                "Group commits of the audit trail",
                stats.commits,
            )?;
            counter(
                e,
                "sluice_audit_bytes",
                "Bytes written to the audit trail",
                stats.bytes,
            )?;
            counter(
                e,
                "sluice_audit_outages",
                "Times the audit trail could not be written for a while (its database lost, its disk full): statements were refused until it could",
                stats.outages,
            )?;
            gauge(
                e,
                "sluice_audit_failed",
                "1 while the audit trail cannot be written (statements are refused)",
                i64::from(shared.audit.failure().is_some()),
            )?;
            let (sum, count, buckets) = shared.audit.write_latency().snapshot();
            e.encode_descriptor(
                "sluice_audit_write_duration_seconds",
                "Time from a statement's record to its durable commit",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabels>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Why the gateway is not ready for new sessions, if it is not: it is
/// shutting down, or its audit trail failed (every session would be
/// refused).
pub fn readiness(shared: &Shared) -> Result<(), String> {
    match *shared.phase.borrow() {
        Phase::Serving => {}
        Phase::Draining | Phase::Closing => return Err("shutting down".to_owned()),
    }
    if let Some(cause) = shared.audit.failure() {
        return Err(format!("the audit trail cannot be written: {cause}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5_000), 0);
        assert_eq!(bucket_of(5_001), 1);
        assert_eq!(bucket_of(1_000_000_000), 16);
        assert_eq!(bucket_of(u64::MAX), BUCKETS.len());

        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(3));
        histogram.observe(Duration::from_micros(700));
        histogram.observe(Duration::from_secs(60));
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.000_703).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.000_005, 1));
        // 700 µs is in the 1 ms bucket; a minute only in +Inf.
        assert_eq!(buckets[6], (0.000_5, 0));
        assert_eq!(buckets[7], (0.001, 1));
        assert_eq!(buckets[19], (10.0, 0));
        assert_eq!(buckets[20], (f64::MAX, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
    }

    #[test]
    fn threads_on_different_shards_add_up() {
        let histogram = Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let histogram = histogram.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        histogram.observe(Duration::from_micros(20));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(histogram.snapshot().1, 4000);
    }
}
