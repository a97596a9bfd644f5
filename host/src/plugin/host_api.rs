//! What a plugin instance's store holds, and the host capabilities the WIT
//! worlds import: the session handle (policy and masking plugins), log,
//! config, clock and (for approval plugins) slack.
//!
//! A plugin reaches nothing else. Its WASI context has no preopened
//! directories, no environment, no arguments, no standard input and no
//! network unless the operator granted them in the plugin's
//! `[plugins.grants]`; what it writes to its standard output and error is
//! kept for sluice's log (see [`super::output`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::bindings::approval::sluice::gateway::slack;
use super::bindings::types::{ConnectionInfo, Principal};
use super::bindings::{clock, config, log, session, types};
use super::output::GuestOutput;
use crate::config::PluginSettings;

/// Longest line a plugin may log; the rest is cut.
const MAX_LOG_LINE: usize = 2048;
/// Most lines a plugin may log in one call; the rest are counted and
/// dropped, so that a plugin looping over its log cannot flood sluice's.
pub const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Lines a plugin may log a second, all its instances together, over
/// time; and how many at once after a quiet spell. A plugin called for
/// every row batch, logging on each, would otherwise write its 64 lines
/// thousands of times a second — enough to fill the disk the audit trail
/// is on, which stops every statement.
const LOG_LINES_PER_SECOND: f64 = 200.0;
const LOG_LINES_BURST: f64 = 2000.0;
/// Most table elements an instance may have, all its tables together:
/// generous for any plugin (function tables are small), a bound against a
/// runaway one.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most linear memories an instance may create. A Rust plugin has one (its
/// component's core modules share it); other toolchains may add one or
/// two. Each reserves gigabytes of address space, so wasmtime's default
/// (10,000) would let one plugin exhaust the process's.
const MAX_MEMORIES: usize = 4;
/// Most tables an instance may create (a Rust plugin has two).
const MAX_TABLES: usize = 32;
/// Most core module instances a component may create (a Rust plugin has
/// three: its code, the canonical ABI's shims and their fixups);
/// toolchains that link several libraries as modules of their own need a
/// few more.
const MAX_INSTANCES: usize = 32;

/// What one version of a plugin was loaded with: everything its imports
/// answer from. Shared by all its instances, read-only.
#[derive(Debug)]
pub struct PluginContext {
    pub name: String,
    pub config_json: String,
    /// The data files the config names, read by the host at load.
    pub files: BTreeMap<String, Arc<[u8]>>,
    pub memory_bytes: usize,
    pub env: Vec<(String, String)>,
    pub read_dirs: Vec<std::path::PathBuf>,
    /// How many more lines the plugin may log now (see
    /// [`LOG_LINES_PER_SECOND`]).
    pub log_budget: LogBudget,
}

/// A plugin's lines to log, refilled with time: a token bucket.
#[derive(Debug)]
pub struct LogBudget(std::sync::Mutex<LogBucket>);

#[derive(Debug)]
struct LogBucket {
    lines: f64,
    filled_at: std::time::Instant,
    /// Lines dropped since the last one logged.
    dropped: u64,
}

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget(std::sync::Mutex::new(LogBucket {
            lines: LOG_LINES_BURST,
            filled_at: std::time::Instant::now(),
            dropped: 0,
        }))
    }
}

impl LogBudget {
    /// Takes a line: `Some(n)` when it may be logged (`n` lines dropped
    /// before it, to say so), `None` when it is dropped.
    fn take(&self) -> Option<u64> {
        self.take_at(std::time::Instant::now())
    }

    fn take_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut bucket = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let refill = now.duration_since(bucket.filled_at).as_secs_f64() * LOG_LINES_PER_SECOND;
        bucket.lines = (bucket.lines + refill).min(LOG_LINES_BURST);
        bucket.filled_at = now;
        if bucket.lines < 1.0 {
            bucket.dropped = bucket.dropped.saturating_add(1);
            return None;
        }
        bucket.lines -= 1.0;
        Some(std::mem::take(&mut bucket.dropped))
    }
}

/// The memory cap was hit: the call traps and fails closed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the plugin tried to grow its linear memory (all memories together) to {wanted} bytes, over its cap of {cap}"
)]
pub struct MemoryCapExceeded {
    pub wanted: usize,
    pub cap: usize,
}

/// A logged-in session: what a plugin's session handle answers from.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Unique for the life of the process; logs and the audit trail use it.
    pub session_id: u64,
    pub principal: Principal,
    pub connection: ConnectionInfo,
}

/// The data of one instance's store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub context: Arc<PluginContext>,
    /// The session of the running call, while a handle on it is lent to
    /// the plugin; `None` between calls.
    pub session: Option<Arc<SessionInfo>>,
    /// A secret the running call was handed (a client's bearer token):
    /// taken out of whatever the plugin logs, and of its faults' details.
    /// `None` between calls.
    pub secret: Option<Arc<str>>,
    /// Epoch ticks the running call may still run for. Ticks spent
    /// suspended (yielded to other sessions) are not counted.
    pub ticks_left: u64,
    /// Bytes of linear memory the instance's memories hold together: the
    /// cap is on this sum, not on each memory, or a component of several
    /// core modules could have it once per memory.
    memory_bytes_in_use: usize,
    /// Table elements the instance's tables hold together.
    table_elements_in_use: usize,
    /// What the instance writes to its standard output and error.
    pub output: GuestOutput,
    /// Lines the running call may still log, and those it logged past
    /// that (reset for every call).
    pub log_lines_left: u32,
    pub log_lines_dropped: u32,
}

/// How fine the clocks a plugin reads through WASI are.
const CLOCK_RESOLUTION: std::time::Duration = std::time::Duration::from_millis(1);

/// The time of day, to the millisecond.
struct CoarseWallClock;

impl wasmtime_wasi::HostWallClock for CoarseWallClock {
    fn resolution(&self) -> std::time::Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> std::time::Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        std::time::Duration::from_millis(now.as_millis() as u64)
    }
}

/// Time since the instance was made, to the millisecond.
struct CoarseMonotonicClock(std::time::Instant);

impl wasmtime_wasi::HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        let nanos = self.0.elapsed().as_nanos() as u64;
        nanos - nanos % self.resolution()
    }
}

impl State {
    pub fn new(context: Arc<PluginContext>) -> Result<State, std::io::Error> {
        let output = GuestOutput::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.clone()).stderr(output.clone());
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // Clocks as coarse as sluice's own `clock` import: a plugin has no
        // use for nanoseconds, and with them could time what the host and
        // other sessions do.
        wasi.wall_clock(CoarseWallClock)
            .monotonic_clock(CoarseMonotonicClock(std::time::Instant::now()));
        for (name, value) in &context.env {
            wasi.env(name, value);
        }
        for dir in &context.read_dirs {
            let guest_path = dir.to_string_lossy();
            wasi.preopened_dir(dir, guest_path, FsPerms::ReadOnly)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
        }
        Ok(State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            context,
            session: None,
            secret: None,
            ticks_left: 0,
            memory_bytes_in_use: 0,
            table_elements_in_use: 0,
            output,
            log_lines_left: MAX_LOG_LINES_PER_CALL,
            log_lines_dropped: 0,
        })
    }

    /// Text the plugin wrote (a log line, its standard streams) made fit
    /// for sluice's log: anything like a card number hidden, the running
    /// call's secret taken out — both before the text is cut to a line's
    /// length, so that the cut cannot leave part of either behind — on one
    /// line.
    pub fn clean(&self, text: &str) -> String {
        // Bounded first, generously: the scans below are of what is kept.
        let text = cut_to(text, 4 * MAX_LOG_LINE);
        let mut text = redact_long_digit_runs(&text);
        if let Some(secret) = &self.secret {
            text = without_secret(&text, secret).into();
        }
        let text = cut_to(&text, MAX_LOG_LINE);
        // One line, the plugin's: a line break cannot start one that
        // reads as sluice's own.
        crate::text::one_line(&text).into_owned()
    }
}

/// `text` cut to at most `max` bytes and an ellipsis. Digits (and the
/// spaces and dashes between them) that reach the cut go too: they may be
/// the start of a card number that the cut took the rest of.
fn cut_to(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let kept = text[..at].trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '-');
    std::borrow::Cow::Owned(format!("{kept}…"))
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// Wasmtime asks before creating a memory or table (growing it from 0) and
// before each growth. What is allowed is charged at once; a growth that
// fails after being allowed (the operating system refused) stays charged,
// which errs on the side of the cap.
impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own maximum the growth fails anyway: refuse it
        // here, uncharged, as `memory.grow` returning -1.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let cap = self.context.memory_bytes;
        let wanted = self
            .memory_bytes_in_use
            .saturating_add(desired.saturating_sub(current));
        if wanted > cap {
            return Err(MemoryCapExceeded { wanted, cap }.into());
        }
        self.memory_bytes_in_use = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let wanted = self
            .table_elements_in_use
            .saturating_add(desired.saturating_sub(current));
        if wanted > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements_in_use = wanted;
        Ok(true)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}

impl types::Host for State {}

impl State {
    /// The session whose handle the running call holds. Every handle is
    /// lent for one call, so without a session there is no valid handle.
    fn lent_session(&self) -> wasmtime::Result<&SessionInfo> {
        self.session
            .as_deref()
            .ok_or_else(|| wasmtime::format_err!("a session handle was used outside its call"))
    }
}

impl session::Host for State {}

impl session::HostSession for State {
    fn id(&mut self, _handle: Resource<session::Session>) -> wasmtime::Result<u64> {
        Ok(self.lent_session()?.session_id)
    }

    fn principal(&mut self, _handle: Resource<session::Session>) -> wasmtime::Result<Principal> {
        Ok(self.lent_session()?.principal.clone())
    }

    fn connection(
        &mut self,
        _handle: Resource<session::Session>,
    ) -> wasmtime::Result<ConnectionInfo> {
        Ok(self.lent_session()?.connection.clone())
    }

    async fn drop(&mut self, _handle: Resource<session::Session>) -> wasmtime::Result<()> {
        // Handles are lent, never owned by the plugin: nothing to free.
        Ok(())
    }
}

impl log::Host for State {
    async fn write(&mut self, level: log::Level, message: String) {
        if self.log_lines_left == 0 {
            self.log_lines_dropped = self.log_lines_dropped.saturating_add(1);
            return;
        }
        self.log_lines_left -= 1;
        let plugin = self.context.name.as_str();
        let Some(dropped) = self.context.log_budget.take() else {
            return;
        };
        if dropped > 0 {
            tracing::warn!(
                plugin,
                dropped,
                "the plugin logged more than {LOG_LINES_PER_SECOND} lines a second; {dropped} were dropped"
            );
        }
        let message = self.clean(&message);
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// `text` with every copy of `secret` (and of any run of 16 or more of its
/// characters, which quoting part of it leaves, or of half of a shorter
/// one) replaced, cut to a length a log line can hold. For what a plugin
/// says when it was handed a client's bearer token: a careless one quotes
/// the token it could not parse.
pub fn without_secret(text: &str, secret: &str) -> String {
    const MAX_REASON_CHARS: usize = 400;
    // The scan is of every window of the secret over the text: bounded.
    const MAX_SCANNED_BYTES: usize = 8192;
    let mut clean = text.to_owned();
    if clean.len() > MAX_SCANNED_BYTES {
        let mut cut = MAX_SCANNED_BYTES;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    let chars: Vec<(usize, char)> = secret.char_indices().collect();
    if !chars.is_empty() {
        clean = clean.replace(secret, "[the token]");
        let quoted = 16.min(chars.len().div_ceil(2)).max(1);
        // Every stretch of the text that some `quoted` characters of the
        // secret cover goes, overlapping stretches as one.
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for window in chars.windows(quoted) {
            let (start, last) = (window[0].0, window[quoted - 1]);
            let part = &secret[start..last.0 + last.1.len_utf8()];
            covered.extend(
                clean
                    .match_indices(part)
                    .map(|(at, _)| (at, at + part.len())),
            );
        }
        covered.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (start, end) in covered {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        for (start, end) in merged.into_iter().rev() {
            clean.replace_range(start..end, "[part of the token]");
        }
    }
    match clean.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}...", &clean[..cut]),
        None => clean,
    }
}

impl config::Host for State {
    async fn get(&mut self) -> String {
        self.context.config_json.clone()
    }

    async fn file(&mut self, key: String) -> Option<Vec<u8>> {
        self.context.files.get(&key).map(|bytes| bytes.to_vec())
    }
}

impl clock::Host for State {
    async fn now(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

impl slack::Host for State {
    async fn post_message(
        &mut self,
        _channel: String,
        _text: String,
        _blocks_json: String,
    ) -> Result<slack::MessageRef, String> {
        Err("Slack is not configured for this gateway".to_owned())
    }

    async fn update_message(
        &mut self,
        _message: slack::MessageRef,
        _text: String,
        _blocks_json: String,
    ) -> Result<(), String> {
        Err("Slack is not configured for this gateway".to_owned())
    }
}

/// Hides every run of 13 or more digits (single spaces or dashes between
/// them allowed) in a plugin's log line: anything that could be a card
/// number, Luhn-valid or not. A log loses nothing it needs by this, and a
/// plugin cannot leak a PAN into sluice's log however it was written.
pub fn redact_long_digit_runs(text: &str) -> std::borrow::Cow<'_, str> {
    const SHORTEST_PAN: usize = 13;
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if matches!(bytes[j], b' ' | b'-')
                && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)
            {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= SHORTEST_PAN {
            spans.push((start, end));
        }
        i = end.max(i + 1);
    }
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = bytes.to_vec();
    for (start, end) in spans {
        for byte in &mut out[start..end] {
            if byte.is_ascii_digit() {
                *byte = b'*';
            }
        }
    }
    // Only ASCII digits were replaced by an ASCII character.
    std::borrow::Cow::Owned(String::from_utf8(out).expect("still UTF-8"))
}

/// The largest data file handed to a plugin (it is copied into the
/// plugin's memory, which is capped too).
const MAX_DATA_FILE_BYTES: u64 = 16 << 20;

/// Reads the data files a plugin's config names.
pub fn read_files(settings: &PluginSettings) -> Result<BTreeMap<String, Arc<[u8]>>, String> {
    settings
        .files
        .iter()
        .map(
            |(key, path)| match crate::config::read_regular_file(path, MAX_DATA_FILE_BYTES) {
                Ok(bytes) => Ok((key.clone(), Arc::from(bytes))),
                Err(error) => Err(format!("file {key:?} ({}): {error}", path.display())),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A plugin logs its burst at once, then as fast as the budget
    /// refills; the lines dropped meanwhile are counted for the next line
    /// that goes out to say so.
    #[test]
    fn a_plugin_s_log_is_bounded_over_time() {
        let budget = LogBudget::default();
        let now = std::time::Instant::now();
        for _ in 0..LOG_LINES_BURST as usize {
            assert_eq!(budget.take_at(now), Some(0));
        }
        for _ in 0..50 {
            assert_eq!(budget.take_at(now), None);
        }
        // A line's worth of time later, one more, saying what was dropped.
        let later = now + std::time::Duration::from_millis(6);
        assert_eq!(budget.take_at(later), Some(50));
        assert_eq!(budget.take_at(later), None);
    }

    fn state_capped_at(memory_bytes: usize) -> State {
        State::new(Arc::new(PluginContext {
            name: "limits".to_owned(),
            config_json: "{}".to_owned(),
            files: BTreeMap::new(),
            memory_bytes,
            env: Vec::new(),
            read_dirs: Vec::new(),
            log_budget: LogBudget::default(),
        }))
        .expect("a sandbox with no grants")
    }

    /// The cap is on the instance's linear memory in total: a component of
    /// several core modules, each with a memory of its own, cannot have
    /// the cap once per memory.
    #[test]
    fn the_memory_cap_counts_every_memory_of_the_instance() {
        let mut state = state_capped_at(16 * MIB);
        // Two memories created (growing from nothing) at 6 MiB each.
        assert!(state.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(state.memory_growing(0, 6 * MIB, None).unwrap());
        // The first grows to 10 MiB: 16 MiB in all, at the cap.
        assert!(state.memory_growing(6 * MIB, 10 * MIB, None).unwrap());
        // The second cannot grow by a page, though it alone is far under.
        let error = state
            .memory_growing(6 * MIB, 6 * MIB + 65536, None)
            .unwrap_err();
        assert!(
            error.downcast_ref::<MemoryCapExceeded>().is_some(),
            "{error}"
        );
        // Nor can a third memory be made.
        assert!(state.memory_growing(0, 65536, None).is_err());
    }

    /// Growth past a memory's own maximum fails without counting, so a
    /// plugin that probes its limit is not charged for memory it never got.
    #[test]
    fn refused_growth_is_not_charged() {
        let mut state = state_capped_at(16 * MIB);
        assert!(state.memory_growing(0, 8 * MIB, Some(8 * MIB)).unwrap());
        for _ in 0..10 {
            assert!(
                !state
                    .memory_growing(8 * MIB, 9 * MIB, Some(8 * MIB))
                    .unwrap()
            );
        }
        assert!(state.memory_growing(0, 8 * MIB, None).unwrap());
    }

    /// Tables, memories and instances are few in any real plugin: the
    /// counts a component may create are bounded well below wasmtime's
    /// defaults (10,000 each), and table elements are bounded in total.
    #[test]
    fn tables_memories_and_instances_are_bounded() {
        let mut state = state_capped_at(16 * MIB);
        assert!(state.memories() < 10);
        assert!(state.tables() < 100);
        assert!(state.instances() < 100);
        let half = MAX_TABLE_ELEMENTS / 2;
        assert!(state.table_growing(0, half, None).unwrap());
        assert!(state.table_growing(0, half, None).unwrap());
        assert!(!state.table_growing(0, 1, None).unwrap());
        assert!(!state.table_growing(half, half + 1, None).unwrap());
    }

    /// What a plugin wrote is cleaned before it is cut: a card number or
    /// the client's token that the cut would split loses every digit and
    /// character, not only those before the cut.
    #[test]
    fn the_cut_leaves_no_part_of_a_card_number_or_a_token() {
        let mut state = state_capped_at(16 * MIB);
        let pan = "4111111111111111";
        let line = format!("{}{pan} and more", "x".repeat(MAX_LOG_LINE - 8));
        let cleaned = state.clean(&line);
        assert!(
            cleaned.len() <= MAX_LOG_LINE + '…'.len_utf8(),
            "{}",
            cleaned.len()
        );
        assert!(!cleaned.contains("41111"), "{cleaned}");
        assert!(
            cleaned.ends_with("x…") || cleaned.ends_with("*…"),
            "{cleaned}"
        );
        // Digits the cut reaches go, whatever they are.
        let cleaned = state.clean(&format!("{}123456789012", "x".repeat(MAX_LOG_LINE - 6)));
        assert!(cleaned.ends_with("x…"), "{cleaned}");

        let token = "tok-Zq8xW3vK9mN2pL5rT7yB4cD6fG1hJ0";
        state.secret = Some(token.into());
        let line = format!("{}cannot parse {token}", "y".repeat(300));
        let cleaned = state.clean(&line);
        assert!(!cleaned.contains("Zq8xW3"), "{cleaned}");
        assert!(!cleaned.contains("hJ0"), "{cleaned}");
        // Line breaks are shown, not made.
        assert_eq!(state.clean("a\nb"), "a\\nb");
    }

    /// A call logs at most its budget of lines; the rest are counted, and
    /// the next call has its budget again (the instance's `arm` resets it).
    #[tokio::test]
    async fn a_call_logs_at_most_its_budget_of_lines() {
        let mut state = state_capped_at(16 * MIB);
        for n in 0..MAX_LOG_LINES_PER_CALL + 6 {
            log::Host::write(&mut state, log::Level::Trace, format!("line {n}")).await;
        }
        assert_eq!(state.log_lines_left, 0);
        assert_eq!(state.log_lines_dropped, 6);
    }

    #[test]
    fn plugin_log_lines_lose_anything_that_could_be_a_card_number() {
        for (line, expected) in [
            ("card 4111111111111111 seen", "card **************** seen"),
            ("4111 1111 1111 1111", "**** **** **** ****"),
            (
                "5500-0000-0000-0004 and 378282246310005",
                "****-****-****-**** and ***************",
            ),
            ("order 123456789012 at 12:30", "order 123456789012 at 12:30"),
            ("phone 555-123-4567", "phone 555-123-4567"),
            ("nothing here", "nothing here"),
            ("1234567890123 ünïcode", "************* ünïcode"),
        ] {
            assert_eq!(redact_long_digit_runs(line), expected, "{line}");
        }
    }
}
