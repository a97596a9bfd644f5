//! The configured plugins as chains, one per hook, in config order, and
//! the calls the data path makes on them.
//!
//! Chaining rules: policies — any deny wins, then any require-approval,
//! else allow; masking — each plugin sees what the ones before it left;
//! identity — the first plugin that knows the user answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::bindings::approval::exports::sluice::gateway::approval::{Answer, Ticket};
use super::bindings::identity::exports::sluice::gateway::identity::{AuthError, StoredSecret};
use super::bindings::masking::exports::sluice::gateway::masking::{
    TextEdit, ValueBatch, ValueEdits,
};
use super::bindings::policy::exports::sluice::gateway::policy::Judgement;
use super::bindings::types::{Column, ConnectionInfo, Decision, Principal, Statement};
use super::host_api::{PluginContext, SessionInfo, read_files};
use super::instance::{Exports, Fault, Plugin, PluginStats, lend};
use super::runtime::Runtime;
use super::{LoadError, builtin};
use crate::config::{Hook, PluginSettings, PluginSource};

/// The largest plugin component file read (the shipped ones are a few
/// MiB).
const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// One guarded call: a warm instance of `$plugin` (of `$world`, which
/// its chain guarantees), the call (bounded by the wall clock as well as
/// its deadline), the answer checked by `$check` (see [`Plugin::checkin`];
/// none: any answer will do), and the instance back to its pool, or
/// dropped with the fault counted. Evaluates to `Result<_, Fault>`.
macro_rules! call {
    ($plugin:expr, $world:ident, |$exports:ident, $store:ident| $call:expr) => {
        call!($plugin, $world, |$exports, $store| $call, Ok)
    };
    ($plugin:expr, $world:ident, |$exports:ident, $store:ident| $call:expr, $check:expr) => {
        async {
            let plugin: &Plugin = &$plugin;
            let mut warm = plugin.checkout().await?;
            let ends_by = warm.ends_by();
            let call = async {
                match &warm.exports {
                    Exports::$world($exports) => {
                        let $store = &mut warm.store;
                        $call.await
                    }
                    _ => unreachable!("a hook's chain holds only plugins of its world"),
                }
            };
            let result = plugin.bounded(ends_by, call).await;
            plugin.checkin(warm, result, $check)
        }
        .await
    };
}

/// The rule named when policies ask different groups to approve one
/// statement (sluice's own, not a plugin's).
pub const ONE_APPROVER_GROUP: &str = "one-approver-group";

/// Longest rule or approver group a policy may name, in characters.
const MAX_NAME_CHARS: usize = 128;
/// Longest reason a policy may give, in bytes; a longer one is cut.
const MAX_REASON_BYTES: usize = 2048;

/// A policy's judgement with its words made fit to pass on. They reach the
/// client's error message — a C string on the wire, where a NUL would end
/// the message and start fields of the plugin's making — the log and the
/// audit trail. A reason longer than [`MAX_REASON_BYTES`] is cut, and its
/// control characters other than line breaks and tabs are shown escaped
/// (a quoted identifier the policy quotes may hold one); a rule is cut to
/// [`MAX_NAME_CHARS`] and shown on one line, invisible characters named.
/// The approver group names who may approve, so it is taken as it is or
/// not at all: an empty one, a longer one, or one with a control or
/// invisible character is an invalid answer (the statement is refused), as
/// is an empty rule.
fn usable_judgement(mut judgement: Judgement) -> Result<Judgement, String> {
    match &mut judgement.decision {
        Decision::Allow => {}
        Decision::Deny(denial) => {
            denial.rule = usable_rule(&denial.rule)?;
            denial.reason = usable_reason(&denial.reason);
        }
        Decision::RequireApproval(requirement) => {
            requirement.rule = usable_rule(&requirement.rule)?;
            usable_group(&requirement.approver_group)?;
            requirement.reason = usable_reason(&requirement.reason);
        }
    }
    Ok(judgement)
}

fn usable_rule(rule: &str) -> Result<String, String> {
    if rule.is_empty() {
        return Err("its rule is empty".to_owned());
    }
    // A rule is a name, shown unmasked in the log, on spans and on the
    // trail: a plugin that puts statement data in it (a card number from
    // a literal) has its digits hidden, as in its log lines — before it is
    // cut, so that the cut cannot leave too few of them to be seen.
    let rule = super::host_api::redact_long_digit_runs(rule);
    let rule: String = rule.chars().take(MAX_NAME_CHARS).collect();
    Ok(crate::text::one_line(&rule).into_owned())
}

fn usable_group(group: &str) -> Result<(), String> {
    if group.is_empty() {
        return Err("its approver group is empty".to_owned());
    }
    if group.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "its approver group is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if crate::text::one_line(group) != group {
        return Err("its approver group holds a control or invisible character".to_owned());
    }
    if super::host_api::redact_long_digit_runs(group) != group {
        return Err("its approver group holds a run of 13 or more digits".to_owned());
    }
    Ok(())
}

fn usable_reason(reason: &str) -> String {
    let mut cut = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    // The reason is masked where it is shown; a card number the cut
    // shortened would no longer look like one, so its digits go too.
    let kept = if cut < reason.len() {
        reason[..cut].trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '-')
    } else {
        reason
    };
    let mut usable = String::with_capacity(cut + 8);
    for c in kept.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            usable.extend(c.escape_default());
        } else {
            usable.push(c);
        }
    }
    if cut < reason.len() {
        usable.push('…');
    }
    usable
}

/// One consistent set of loaded plugins. Swapped whole on reload; a
/// statement keeps the set it started with.
#[derive(Debug, Default)]
pub struct PluginSet {
    identity: Vec<Arc<Plugin>>,
    policy: Vec<Arc<Plugin>>,
    masking: Vec<Arc<Plugin>>,
    approval: Vec<Arc<Plugin>>,
}

/// What the policy chain decided.
/// A chain's verdict, and whether it may be reused for the session's
/// later statements of the same shape.
#[derive(Debug, Clone)]
pub struct Judged {
    pub verdict: Verdict,
    pub same_for_shape: bool,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Allow,
    Deny {
        plugin: String,
        rule: String,
        reason: String,
    },
    RequireApproval {
        plugin: String,
        rule: String,
        reason: String,
        approver_group: String,
    },
}

impl PluginSet {
    /// Loads `settings`, reusing from `previous` every plugin whose
    /// component, config and files are unchanged (with its warm instances).
    pub async fn load(
        runtime: &'static Runtime,
        settings: &[PluginSettings],
        previous: Option<&PluginSet>,
    ) -> Result<PluginSet, LoadError> {
        let mut set = PluginSet::default();
        for plugin_settings in settings {
            let plugin = load_one(runtime, plugin_settings, previous).await?;
            set.chain_mut(plugin.hook).push(plugin);
        }
        Ok(set)
    }

    fn chain_mut(&mut self, hook: Hook) -> &mut Vec<Arc<Plugin>> {
        match hook {
            Hook::Identity => &mut self.identity,
            Hook::Policy => &mut self.policy,
            Hook::Masking => &mut self.masking,
            Hook::Approval => &mut self.approval,
        }
    }

    pub fn chain(&self, hook: Hook) -> &[Arc<Plugin>] {
        match hook {
            Hook::Identity => &self.identity,
            Hook::Policy => &self.policy,
            Hook::Masking => &self.masking,
            Hook::Approval => &self.approval,
        }
    }

    /// Whether `other` holds the very same plugins (reused, unchanged) in
    /// the same chains and order.
    pub fn same_plugins(&self, other: &PluginSet) -> bool {
        Hook::ALL.into_iter().all(|hook| {
            let (mine, theirs) = (self.chain(hook), other.chain(hook));
            mine.len() == theirs.len() && mine.iter().zip(theirs).all(|(a, b)| Arc::ptr_eq(a, b))
        })
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        Hook::ALL.into_iter().flat_map(|hook| self.chain(hook))
    }

    /// The plugins in force, as the audit trail names them.
    pub fn versions(&self) -> Vec<crate::audit::PluginVersion> {
        self.plugins()
            .map(|plugin| crate::audit::PluginVersion {
                name: plugin.name.clone(),
                hook: plugin.hook.name(),
                fingerprint: plugin.fingerprint.clone(),
            })
            .collect()
    }

    fn find(&self, name: &str, fingerprint: &str) -> Option<&Arc<Plugin>> {
        self.plugins()
            .find(|p| p.name == name && p.fingerprint == fingerprint)
    }

    fn stats(&self, name: &str) -> Option<Arc<PluginStats>> {
        self.plugins()
            .find(|p| p.name == name)
            .map(|p| p.stats.clone())
    }

    // ---- policy -----------------------------------------------------

    /// Runs the policy chain on one statement. With no policy plugin,
    /// everything is allowed (the foundation's behaviour).
    pub async fn evaluate(
        &self,
        session: &Arc<SessionInfo>,
        statement: &Statement,
    ) -> Result<Verdict, Fault> {
        Ok(self.judge(session, statement).await?.verdict)
    }

    /// [`PluginSet::evaluate`], saying also whether the verdict holds for
    /// every statement of the same shape in this session: true only when
    /// every plugin asked said its decision did (see the WIT's
    /// `judgement`).
    pub async fn judge(
        &self,
        session: &Arc<SessionInfo>,
        statement: &Statement,
    ) -> Result<Judged, Fault> {
        let mut verdict = Verdict::Allow;
        let mut same_for_shape = true;
        for plugin in &self.policy {
            let judgement = call!(
                plugin,
                Policy,
                |e, store| {
                    let session = lend(store, session);
                    e.sluice_gateway_policy()
                        .call_evaluate(store, session, statement)
                },
                usable_judgement
            )?;
            same_for_shape &= judgement.same_for_shape;
            match judgement.decision {
                Decision::Allow => {}
                Decision::Deny(denial) => {
                    return Ok(Judged {
                        verdict: Verdict::Deny {
                            plugin: plugin.name.clone(),
                            rule: denial.rule,
                            reason: denial.reason,
                        },
                        same_for_shape,
                    });
                }
                Decision::RequireApproval(requirement) => match &verdict {
                    Verdict::RequireApproval { approver_group, .. }
                        if *approver_group != requirement.approver_group =>
                    {
                        // One ticket asks one group: the first group's word
                        // must not stand in for another's.
                        return Ok(Judged {
                            verdict: Verdict::Deny {
                                plugin: plugin.name.clone(),
                                rule: ONE_APPROVER_GROUP.to_owned(),
                                reason: format!(
                                    "the policies ask different groups ({approver_group}, {}) to approve this statement, and one approval asks one group",
                                    requirement.approver_group
                                ),
                            },
                            same_for_shape,
                        });
                    }
                    Verdict::RequireApproval { .. } => {}
                    _ => {
                        verdict = Verdict::RequireApproval {
                            plugin: plugin.name.clone(),
                            rule: requirement.rule,
                            reason: requirement.reason,
                            approver_group: requirement.approver_group,
                        };
                    }
                },
            }
        }
        Ok(Judged {
            verdict,
            same_for_shape,
        })
    }

    // ---- masking ----------------------------------------------------

    pub fn masks(&self) -> bool {
        !self.masking.is_empty()
    }

    /// Asks each masking plugin which columns of a result set it wants.
    pub async fn select_columns(
        &self,
        session: &Arc<SessionInfo>,
        columns: &[Column],
    ) -> Result<Selection, Fault> {
        let mut plugins = Vec::new();
        let mut any = vec![false; columns.len()];
        for plugin in &self.masking {
            let selected = call!(
                plugin,
                Masking,
                |e, store| {
                    let session = lend(store, session);
                    e.sluice_gateway_masking()
                        .call_select_columns(store, session, columns)
                },
                |selected: Vec<bool>| if selected.len() == columns.len() {
                    Ok(selected)
                } else {
                    Err(format!(
                        "select-columns returned {} flags for {} columns",
                        selected.len(),
                        columns.len()
                    ))
                }
            )?;
            if selected.iter().any(|s| *s) {
                for (any, selected) in any.iter_mut().zip(&selected) {
                    *any |= *selected;
                }
                plugins.push((plugin.clone(), selected));
            }
        }
        Ok(Selection { any, plugins })
    }

    /// Runs the masking chain over free text (server message fields, column
    /// names, the text sluice writes about traffic). `None` when nothing
    /// changed. Several texts may travel joined by NULs (see
    /// [`crate::masking::mask_texts`]): an answer that adds or removes one
    /// is refused.
    pub async fn mask_text(&self, text: &str) -> Result<Option<String>, Fault> {
        let mut current: Option<String> = None;
        for plugin in &self.masking {
            let input = current.as_deref().unwrap_or(text);
            // Its backslash escapes shown as spaces (see
            // `masking::escapes`); the edits are made to the text itself.
            let blanked = crate::masking::escapes::blanked(input);
            let (shown, escapes) = match &blanked {
                Some((view, escapes)) => (view.as_str(), escapes.as_slice()),
                None => (input, &[][..]),
            };
            let masked = call!(
                plugin,
                Masking,
                |e, store| e.sluice_gateway_masking().call_mask_text(store, shown),
                |mut edits: Vec<TextEdit>| {
                    for edit in &mut edits {
                        let (start, end) = (edit.start as usize, edit.end as usize);
                        let Some((start, _)) =
                            crate::masking::escapes::edit_of_text(escapes, start, end)
                        else {
                            return Err(format!(
                                "mask-text: edit {start}..{end} begins or ends inside a backslash escape"
                            ));
                        };
                        edit.start = start as u32;
                    }
                    apply_text_edits(input, &edits).map_err(|detail| format!("mask-text: {detail}"))
                }
            )?;
            if let Some(masked) = masked {
                current = Some(masked);
            }
        }
        Ok(current)
    }

    // ---- approval ---------------------------------------------------

    pub fn approves(&self) -> bool {
        !self.approval.is_empty()
    }

    /// Tells every approval plugin about a held statement. The first that
    /// cannot (an error it returns) refuses the statement.
    pub async fn request_approval(&self, ticket: &Ticket) -> Result<Result<(), String>, Fault> {
        for plugin in &self.approval {
            if let Err(error) = call!(plugin, Approval, |e, store| e
                .sluice_gateway_approval()
                .call_request(store, ticket))?
            {
                return Ok(Err(format!("{}: {error}", plugin.name)));
            }
        }
        Ok(Ok(()))
    }

    /// The answer the first approval plugin reads in an interaction, with
    /// that plugin's name.
    pub async fn on_interaction(&self, payload: &str) -> Result<Option<(String, Answer)>, Fault> {
        for plugin in &self.approval {
            if let Some(answer) = call!(plugin, Approval, |e, store| e
                .sluice_gateway_approval()
                .call_on_interaction(store, payload))?
            {
                return Ok(Some((plugin.name.clone(), answer)));
            }
        }
        Ok(None)
    }

    /// Tells the approval plugins how a ticket ended, so they can update
    /// what approvers see. Failures are logged: the outcome stands.
    pub async fn approval_outcome(&self, ticket: &Ticket, outcome: &str) {
        for plugin in &self.approval {
            if let Ok(Err(error)) = call!(plugin, Approval, |e, store| e
                .sluice_gateway_approval()
                .call_on_outcome(store, ticket, outcome))
            {
                tracing::warn!(plugin = %plugin.name, ticket = %ticket.id, %error, "approval plugin could not record an outcome");
            }
        }
    }

    // ---- identity ---------------------------------------------------

    pub fn identifies(&self) -> bool {
        !self.identity.is_empty()
    }

    /// The first stored secret an identity plugin has for `user`.
    pub async fn scram_verifier(
        &self,
        user: &str,
        connection: &ConnectionInfo,
    ) -> Result<Option<(String, StoredSecret)>, Fault> {
        for plugin in &self.identity {
            // Answers that admit nobody are the plugin's faults, counted as
            // any invalid answer is — judged before the instance serves
            // again, which then does not.
            let answer = call!(
                plugin,
                Identity,
                |e, store| e
                    .sluice_gateway_identity()
                    .call_scram_verifier(store, user, connection),
                |secret: Option<StoredSecret>| match secret {
                    Some(secret) if secret.principal.id != user => {
                        Err("scram-verifier answered with another user's principal".to_owned())
                    }
                    Some(secret) => match secret
                        .scram_verifier
                        .parse::<crate::auth::scram::Verifier>()
                    {
                        Ok(_) => Ok(Some(secret)),
                        Err(error) => Err(format!(
                            "scram-verifier returned an unusable verifier: {error}"
                        )),
                    },
                    None => Ok(None),
                }
            )?;
            if let Some(secret) = answer {
                return Ok(Some((plugin.name.clone(), secret)));
            }
        }
        Ok(None)
    }

    /// Checks a bearer token with each identity plugin until one knows the
    /// user. The principal must be the startup user.
    pub async fn authenticate(
        &self,
        user: &str,
        token: &str,
        connection: &ConnectionInfo,
    ) -> Result<Result<Principal, AuthError>, Fault> {
        for plugin in &self.identity {
            // Judged before the instance serves again (see scram_verifier).
            match call!(
                plugin,
                Identity,
                |e, store| {
                    store.data_mut().secret = Some(token.into());
                    e.sluice_gateway_identity()
                        .call_authenticate(store, user, token, connection)
                },
                |answer: Result<Principal, AuthError>| match answer {
                    Ok(principal) if principal.id != user => {
                        Err("authenticate answered with another user's principal".to_owned())
                    }
                    answer => Ok(answer),
                }
            )? {
                Err(AuthError::UnknownUser) => continue,
                answer => return Ok(answer),
            }
        }
        Ok(Err(AuthError::UnknownUser))
    }
}

/// `input` with a masking plugin's text edits made; `None` when it made
/// none. An edit out of bounds, off a character boundary, overlapping
/// another, or adding or removing a NUL separator makes the answer
/// invalid.
fn apply_text_edits(input: &str, edits: &[TextEdit]) -> Result<Option<String>, String> {
    if edits.is_empty() {
        return Ok(None);
    }
    let mut spans: Vec<(usize, usize, &[u8])> = edits
        .iter()
        .map(|e| (e.start as usize, e.end as usize, e.replacement.as_bytes()))
        .collect();
    spans.sort_by_key(|&(start, _, _)| start);
    let mut masked = Vec::with_capacity(input.len());
    crate::masking::batch::apply_spans(input.as_bytes(), &spans, &mut masked)?;
    let masked =
        String::from_utf8(masked).map_err(|_| "the edited text is not UTF-8".to_owned())?;
    let separators = |text: &str| text.bytes().filter(|b| *b == 0).count();
    if separators(&masked) != separators(input) {
        return Err("an edit added or removed a NUL separator".to_owned());
    }
    Ok(Some(masked))
}

/// Which masking plugins want which columns of one result set.
#[derive(Debug, Default)]
pub struct Selection {
    /// Per column: whether any plugin wants it.
    pub any: Vec<bool>,
    /// The plugins that want at least one column, with their flags.
    pub plugins: Vec<(Arc<Plugin>, Vec<bool>)>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

async fn load_one(
    runtime: &'static Runtime,
    settings: &PluginSettings,
    previous: Option<&PluginSet>,
) -> Result<Arc<Plugin>, LoadError> {
    let fail = |reason: String| LoadError {
        plugin: settings.name.clone(),
        reason,
    };
    // The files are read off the runtime: a component of hundreds of
    // megabytes, or a slow disk, would hold up every task of its thread
    // (on the main runtime, accepting connections) for as long.
    let reading = settings.clone();
    let (wasm, files) = tokio::task::spawn_blocking(move || {
        let wasm: Arc<[u8]> = match &reading.source {
            PluginSource::Builtin(name) => match builtin::get(name) {
                Some(bytes) => Arc::from(bytes),
                None => {
                    return Err(format!(
                        "there is no builtin plugin {name:?} (builtins: {})",
                        builtin::names().join(", ")
                    ));
                }
            },
            PluginSource::File(path) => crate::config::read_regular_file(path, MAX_COMPONENT_BYTES)
                .map(Arc::from)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        Ok((wasm, read_files(&reading)?))
    })
    .await
    .map_err(|e| fail(format!("reading its files was interrupted: {e}")))?
    .map_err(fail)?;
    let fingerprint = fingerprint(settings, &wasm, &files);
    if let Some(unchanged) = previous.and_then(|set| set.find(&settings.name, &fingerprint)) {
        return Ok(unchanged.clone());
    }

    let bytes = wasm.clone();
    let component = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
        .await
        .map_err(|e| fail(format!("compiling was interrupted: {e}")))?
        .map_err(|e| {
            fail(format!(
                "not a loadable WebAssembly component ({}): {e:#}",
                settings.source
            ))
        })?;
    let context = Arc::new(PluginContext {
        name: settings.name.clone(),
        config_json: settings.config_json.clone(),
        files,
        memory_bytes: settings.memory_bytes,
        env: settings.env.clone(),
        read_dirs: settings.read_dirs.clone(),
        log_budget: Default::default(),
    });
    // A candidate is checked with counters of its own: a replacement that
    // traps on its config is no fault of the version serving. Once taken,
    // it counts on from where the version it replaces left off.
    let mut plugin = Plugin::link(
        runtime,
        settings,
        &component,
        context,
        fingerprint,
        Arc::default(),
    )
    .map_err(|e| {
        let foreign = super::runtime::foreign_contract_versions(runtime.engine(), &component);
        if foreign.is_empty() {
            fail(format!(
                "{} is not a {} plugin (the {}-plugin world): {e:#}",
                settings.source, settings.hook, settings.hook
            ))
        } else {
            fail(format!(
                "{} was built against sluice:gateway@{}, and this sluice speaks \
                 sluice:gateway@{}: rebuild it with this sluice's plugin SDK (linking it \
                 as a {} plugin failed: {e:#})",
                settings.source,
                foreign.join(", @"),
                super::runtime::CONTRACT_VERSION,
                settings.hook
            ))
        }
    })?;
    plugin.check_config().await.map_err(|reason| {
        // The plugin's words, for an operator's terminal and the log:
        // on one line, and not the whole of a plugin's memory.
        let reason: String = reason.chars().take(MAX_REASON_BYTES).collect();
        fail(format!(
            "rejected its configuration: {}",
            crate::text::one_line(&reason)
        ))
    })?;
    if let Some(carried) = previous.and_then(|set| set.stats(&settings.name)) {
        plugin.stats = carried;
    }
    Ok(Arc::new(plugin))
}

/// A digest of everything a plugin version is made of.
/// A granted environment variable's value as the fingerprint takes it:
/// keyed with a secret of this process, since the fingerprint is published
/// (logs, the audit trail) and a plain hash of a weak secret (a token, a
/// password) could be guessed from it offline. A plugin with granted
/// variables therefore gets a new fingerprint each time sluice starts.
fn hidden_value(value: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().into()
}

fn fingerprint(
    settings: &PluginSettings,
    wasm: &[u8],
    files: &BTreeMap<String, Arc<[u8]>>,
) -> String {
    let mut digest = Sha256::new();
    let mut field = |bytes: &[u8]| {
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    };
    field(wasm);
    field(settings.hook.name().as_bytes());
    field(settings.config_json.as_bytes());
    field(&settings.deadline.as_nanos().to_le_bytes());
    field(&settings.memory_bytes.to_le_bytes());
    field(&settings.max_instances.to_le_bytes());
    for (key, contents) in files {
        field(key.as_bytes());
        field(contents);
    }
    for (name, value) in &settings.env {
        field(name.as_bytes());
        field(&hidden_value(value));
    }
    for dir in &settings.read_dirs {
        field(dir.as_os_str().as_encoded_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One masking plugin's edits for a batch, unchecked: a caller that finds
/// them invalid afterwards reports it with [`Plugin::invalid_answer`].
/// [`mask_batch_checked`] checks them before the instance serves again.
pub async fn mask_batch(
    plugin: &Plugin,
    session: &Arc<SessionInfo>,
    batch: &ValueBatch,
) -> Result<ValueEdits, Fault> {
    mask_batch_checked(plugin, session, batch, Ok).await
}

/// One masking plugin's edits for a batch, passed through `check` (which
/// applies them, say) before the instance goes back to its pool: an answer
/// `check` refuses drops the instance and is an invalid-answer fault.
pub async fn mask_batch_checked<T>(
    plugin: &Plugin,
    session: &Arc<SessionInfo>,
    batch: &ValueBatch,
    check: impl FnOnce(ValueEdits) -> Result<T, String>,
) -> Result<T, Fault> {
    call!(
        plugin,
        Masking,
        |e, store| {
            let session = lend(store, session);
            e.sluice_gateway_masking()
                .call_mask_batch(store, session, batch)
        },
        |edits: ValueEdits| {
            let masked = values_edited(&edits);
            let checked = check(edits).map_err(|detail| format!("mask-batch: {detail}"))?;
            plugin
                .stats
                .values_masked
                .fetch_add(masked, std::sync::atomic::Ordering::Relaxed);
            Ok(checked)
        }
    )
}

/// How many values `edits` change.
fn values_edited(edits: &ValueEdits) -> u64 {
    // Edits come in value order: each change of value is one more value.
    let mut values = 0u64;
    let mut last = None;
    for edit in &edits.edits {
        if last != Some(edit.value) {
            values += 1;
            last = Some(edit.value);
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::types::StatementKind;
    use crate::plugin::builtin::test_guests;
    use crate::plugin::testing;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// A granted variable's value changes the fingerprint (a changed
    /// secret reloads the plugin), and is not hashed plainly into it.
    #[test]
    fn granted_values_change_the_fingerprint_without_being_hashed_plainly() {
        let with = |value: &str| PluginSettings {
            env: vec![("TOKEN".to_owned(), value.to_owned())],
            ..testing::plugin_settings("p", Hook::Policy, "p.wasm", "{}")
        };
        let files = BTreeMap::new();
        let print = |value: &str| fingerprint(&with(value), b"wasm", &files);
        assert_eq!(print("hunter2"), print("hunter2"));
        assert_ne!(print("hunter2"), print("hunter3"));
        let plain: [u8; 32] = Sha256::digest(b"hunter2").into();
        assert_ne!(hidden_value("hunter2"), plain);
    }

    fn settings(name: &str, path: &str, deadline_ms: u64, memory_mb: usize) -> PluginSettings {
        PluginSettings {
            deadline: Duration::from_millis(deadline_ms),
            memory_bytes: memory_mb << 20,
            ..testing::plugin_settings(name, Hook::Policy, path, "{}")
        }
    }

    fn session() -> Arc<SessionInfo> {
        testing::session()
    }

    fn statement(text: &str) -> Statement {
        testing::statement(StatementKind::Select, text)
    }

    /// What a policy says reaches a client's error message, the log and
    /// the trail: a NUL (which ends a C string on the wire and would start
    /// error fields of the plugin's making) or another control character is
    /// shown escaped, a long reason cut, a rule put on one line; an
    /// approver group that is not a plain name is an invalid answer.
    #[test]
    fn a_policy_s_words_are_made_fit_to_pass_on() {
        use crate::plugin::bindings::types::{ApprovalRequirement, Denial};
        let deny = |rule: &str, reason: &str| Judgement {
            decision: Decision::Deny(Denial {
                rule: rule.to_owned(),
                reason: reason.to_owned(),
            }),
            same_for_shape: false,
        };
        let approve = |rule: &str, group: &str| Judgement {
            decision: Decision::RequireApproval(ApprovalRequirement {
                rule: rule.to_owned(),
                reason: "why".to_owned(),
                approver_group: group.to_owned(),
            }),
            same_for_shape: false,
        };
        let words = |judgement: Judgement| match usable_judgement(judgement).unwrap().decision {
            Decision::Deny(denial) => (denial.rule, denial.reason),
            Decision::RequireApproval(requirement) => (requirement.rule, requirement.reason),
            Decision::Allow => unreachable!("a denial or a requirement"),
        };
        assert_eq!(
            words(deny("no-delete", "two lines:\n\tindented")),
            ("no-delete".to_owned(), "two lines:\n\tindented".to_owned())
        );
        let (_, reason) = words(deny("r", "no\0Cforged \u{1b}[2J \"tab\x01le\""));
        assert_eq!(reason, "no\\u{0}Cforged \\u{1b}[2J \"tab\\u{1}le\"");
        let (rule, _) = words(deny("r\n2099 INFO forged\u{202e}", "x"));
        assert_eq!(rule, "r\\n2099 INFO forged<U+202E>");
        // Statement data in a rule: no card number goes on unmasked.
        let (rule, _) = words(deny("no-card-4111111111111111", "x"));
        assert_eq!(rule, "no-card-****************");
        let (rule, reason) = words(deny(&"r".repeat(500), &"é".repeat(MAX_REASON_BYTES)));
        assert_eq!(rule.chars().count(), MAX_NAME_CHARS);
        assert!(
            reason.len() <= MAX_REASON_BYTES + '…'.len_utf8(),
            "{}",
            reason.len()
        );
        assert!(reason.ends_with("é…"), "{reason}");
        // A card number the cut reaches: hidden before a rule is cut, gone
        // from a reason (masked where shown, but not once shortened).
        let long = format!("{}4111111111111111", "r".repeat(MAX_NAME_CHARS - 4));
        let (rule, _) = words(deny(&long, "x"));
        assert!(rule.ends_with("r****"), "{rule}");
        let long = format!("{} 4111 1111 1111 1111", "r".repeat(MAX_REASON_BYTES - 12));
        let (_, reason) = words(deny("r", &long));
        assert!(reason.ends_with("r…"), "{reason}");
        assert_eq!(
            words(approve("cardholder-data", "security")).0,
            "cardholder-data"
        );
        for (bad, why) in [
            (deny("", "x"), "rule is empty"),
            (approve("", "ops"), "rule is empty"),
            (approve("r", ""), "approver group is empty"),
            (approve("r", "ops\r"), "control or invisible"),
            (approve("r", "ops\u{200b}"), "control or invisible"),
            (approve("r", &"g".repeat(MAX_NAME_CHARS + 1)), "longer than"),
            (approve("r", "ops-4111111111111111"), "13 or more digits"),
        ] {
            let error = usable_judgement(bad).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }

    #[tokio::test]
    async fn faults_are_classified_and_the_next_call_gets_a_fresh_instance() {
        let runtime = Runtime::shared();
        for (path, text, deadline_ms, memory_mb, kind) in [
            (test_guests::GUEST_TRAP, "trap", 1000, 64, "trap"),
            (test_guests::GUEST_LOOP, "loop", 30, 64, "deadline"),
            (test_guests::GUEST_ALLOC, "alloc", 5000, 16, "memory"),
        ] {
            let set = PluginSet::load(
                runtime,
                &[settings(kind, path, deadline_ms, memory_mb)],
                None,
            )
            .await
            .unwrap();
            let started = Instant::now();
            let fault = set
                .evaluate(&session(), &statement(text))
                .await
                .unwrap_err();
            assert_eq!(fault.kind(), kind, "{fault} after {:?}", started.elapsed());
            if kind == "trap" {
                // The panic's message, which the plugin wrote to its
                // stderr, says why.
                assert!(
                    fault
                        .to_string()
                        .contains("guest-trap: trapping as the statement asks"),
                    "{fault}"
                );
            }
            let verdict = set.evaluate(&session(), &statement("fine")).await.unwrap();
            assert!(matches!(verdict, Verdict::Allow));
            let stats = &set.policy[0].stats;
            assert_eq!(stats.faults(), 1);
            assert_eq!(
                stats
                    .instances_created
                    .load(std::sync::atomic::Ordering::Relaxed),
                2
            );
        }
    }

    fn instances_created(plugin: &Plugin) -> u64 {
        plugin
            .stats
            .instances_created
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A plugin waiting inside WASI (a sleep) runs no wasm, so its epoch
    /// budget never runs out: the wall clock must end the call, as the same
    /// deadline fault, and the next call must get a fresh instance.
    #[tokio::test]
    async fn a_call_waiting_inside_wasi_faults_at_its_deadline() {
        let set = PluginSet::load(
            Runtime::shared(),
            &[settings("sleep", test_guests::GUEST_SLEEP, 100, 64)],
            None,
        )
        .await
        .unwrap();
        let started = Instant::now();
        // The guest sleeps ten seconds: an answer within five was cut short.
        let fault = tokio::time::timeout(
            Duration::from_secs(5),
            set.evaluate(&session(), &statement("sleep")),
        )
        .await
        .expect("the call ends well before the guest's sleep would")
        .expect_err("a call cut short fails closed");
        assert_eq!(
            fault.kind(),
            "deadline",
            "{fault} after {:?}",
            started.elapsed()
        );

        let verdict = set.evaluate(&session(), &statement("fine")).await.unwrap();
        assert!(matches!(verdict, Verdict::Allow));
        let plugin = &set.policy[0];
        assert_eq!(
            plugin
                .stats
                .deadlines
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // One at load, one after the abandoned call: never the same store.
        assert_eq!(instances_created(plugin), 2);
    }

    /// A plugin's instances are bounded: a call that finds the only one
    /// in use (here a call waiting inside WASI) waits for it, and gets a
    /// place once that call is cut short and its instance dropped — never
    /// a second instance beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_waits_for_an_instance_when_the_bound_is_reached() {
        let set = PluginSet::load(
            Runtime::shared(),
            &[PluginSettings {
                max_instances: 1,
                ..settings("one", test_guests::GUEST_SLEEP, 100, 64)
            }],
            None,
        )
        .await
        .unwrap();
        let set = Arc::new(set);
        let started = Instant::now();
        let sleeper = tokio::spawn({
            let set = set.clone();
            async move { set.evaluate(&session(), &statement("sleep")).await }
        });
        // The sleeper has begun its call (the load's check was the first).
        let plugin = &set.policy[0];
        let began = tokio::time::timeout(Duration::from_secs(30), async {
            while plugin.stats.calls() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        began.await.expect("the sleeper's call began");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let verdict = set.evaluate(&session(), &statement("fine")).await;
        let waited = started.elapsed();
        assert!(matches!(verdict, Ok(Verdict::Allow)), "{verdict:?}");
        let fault = sleeper.await.unwrap().unwrap_err();
        assert_eq!(fault.kind(), "deadline", "{fault}");
        // It ran only once the sleeper's wall-clock bound (300 ms) ended it.
        assert!(waited >= plugin.wall_clock_limit(), "{waited:?}");
        // The load's instance, dropped with the sleeper's call; then one.
        assert_eq!(instances_created(plugin), 2);
    }

    /// A call that finds every instance busy for as long as it may wait
    /// fails closed, counted as `busy`; one waiting is woken by an instance
    /// coming back to a pool, and takes it (none is made); and an idle
    /// instance in another thread's pool is taken rather than a new one
    /// made past the bound.
    #[tokio::test]
    async fn a_call_that_finds_every_instance_busy_fails_closed() {
        let set = PluginSet::load(
            Runtime::shared(),
            &[PluginSettings {
                max_instances: 1,
                ..settings("one", test_guests::GUEST_ALLOW_ALL, 20, 64)
            }],
            None,
        )
        .await
        .unwrap();
        let plugin = set.policy[0].clone();
        let check_in = |warm| plugin.checkin(warm, Ok(()), Ok::<(), String>);

        let held = plugin.checkout().await.unwrap();
        let started = Instant::now();
        let Err(fault) = plugin.checkout().await else {
            panic!("a second instance was made past the bound");
        };
        assert_eq!(fault.kind(), "busy", "{fault}");
        assert!(fault.to_string().contains("all 1 of its instances busy"));
        assert!(started.elapsed() >= plugin.wall_clock_limit());
        assert_eq!(plugin.stats.busy.load(Ordering::Relaxed), 1);

        // Woken by the instance coming back.
        let waiter = tokio::spawn({
            let plugin = plugin.clone();
            async move { plugin.checkout().await }
        });
        tokio::task::yield_now().await;
        check_in(held).unwrap();
        let Ok(warm) = waiter.await.unwrap() else {
            panic!("the waiter did not take the instance");
        };
        assert_eq!(instances_created(&plugin), 1);

        // Given back on a thread whose pool shard is not ours: taken from
        // there.
        let ours = crate::metrics::shard();
        let mut warm = Some(warm);
        while warm.is_some() {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    if crate::metrics::shard() != ours {
                        check_in(warm.take().expect("held")).unwrap();
                    }
                });
            });
        }
        let warm = plugin.checkout().await.expect("the idle instance");
        check_in(warm).unwrap();
        assert_eq!(instances_created(&plugin), 1);
        assert_eq!(plugin.stats.busy.load(Ordering::Relaxed), 1);
    }

    /// An instance that gave an answer sluice cannot use is dropped (its
    /// state is suspect), whether the answer is judged inside the call or
    /// after it.
    #[tokio::test]
    async fn an_instance_that_gave_an_invalid_answer_is_replaced() {
        let set = PluginSet::load(
            Runtime::shared(),
            &[testing::plugin_settings(
                "bad",
                Hook::Masking,
                test_guests::GUEST_BAD_ANSWER,
                "{}",
            )],
            None,
        )
        .await
        .unwrap();
        let plugin = set.masking[0].clone();
        assert_eq!(instances_created(&plugin), 1);

        let fault = set.mask_text("bad text").await.unwrap_err();
        assert_eq!(fault.kind(), "invalid-answer", "{fault}");
        assert_eq!(set.mask_text("fine").await.unwrap(), None);
        assert_eq!(instances_created(&plugin), 2);

        let columns = [Column {
            name: "pan".into(),
            table_oid: 0,
            column_number: 0,
            type_oid: 25,
            type_modifier: -1,
            format: crate::plugin::bindings::types::ValueFormat::Text,
        }];
        let fault = set.select_columns(&session(), &columns).await.unwrap_err();
        assert_eq!(fault.kind(), "invalid-answer", "{fault}");
        assert_eq!(set.mask_text("fine").await.unwrap(), None);
        assert_eq!(instances_created(&plugin), 3);

        // Judged after the instance went back to its pool (as a caller
        // that checks an answer against its own data does).
        assert_eq!(set.mask_text("fine").await.unwrap(), None);
        plugin.invalid_answer("judged by the caller");
        assert_eq!(set.mask_text("fine").await.unwrap(), None);
        assert_eq!(instances_created(&plugin), 4);
        assert_eq!(
            plugin
                .stats
                .invalid_answers
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }
}
