//! The `sluice` command: serve, check a config, make token verifiers, run
//! the quickstart demo, and start a new plugin.

mod demo;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sluice::auth::scram;
use sluice::config::{Config, Overrides, Settings};
use sluice::gateway::Gateway;
use sluice::scaffold::PluginKind;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A PostgreSQL gateway that enforces PCI DSS controls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients with the given config.
    Serve {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen here instead (HOST:PORT).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Front this server instead (postgres://user@host:port/database).
        #[arg(long, value_name = "URL")]
        upstream: Option<String>,
        /// Record the audit trail in this file instead (its head in
        /// PATH.head; the config's key_file, if any, stays the key).
        #[arg(long, value_name = "PATH")]
        audit_file: Option<PathBuf>,
        /// Serve the admin HTTP port (/metrics, /healthz, /readyz) here
        /// (HOST:PORT).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<String>,
    },
    /// Check a config file (and the files it names) without serving.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make a SCRAM-SHA-256 verifier for a principal's token (read from
    /// standard input), for `token_verifier` in the config.
    HashToken {
        /// PBKDF2 iterations.
        #[arg(long, default_value_t = scram::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Start a throwaway PostgreSQL with example data and sluice in front of
    /// it (demo credentials: never use them elsewhere).
    Demo {
        /// First port to try for sluice.
        #[arg(long, default_value_t = sluice::config::DEFAULT_PORT)]
        port: u16,
    },
    /// Work on plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Read and check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Where the trail is: the config's `[audit]`, or `--audit-file`.
#[derive(clap::Args)]
struct TrailArgs {
    /// The config file whose `[audit]` names the trail.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The trail's active file instead: its head in PATH.head, its key the
    /// config's key_file, else SLUICE_AUDIT_KEY_FILE, else PATH.key.
    #[arg(long, value_name = "PATH")]
    audit_file: Option<PathBuf>,
}

/// Which records to read.
#[derive(clap::Args)]
struct FilterArgs {
    /// Only this gateway instance's records (an audit database several
    /// instances write to).
    #[arg(long)]
    instance: Option<String>,
    /// Only this principal's sessions (and failed logins as this user).
    #[arg(long)]
    principal: Option<String>,
    /// From this UTC time (2026-11-29, 2026-11-29T06:30, ...).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this UTC time (a prefix takes in all it names).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only statements with this verdict (allow, deny, error) and their
    /// outcomes.
    #[arg(long)]
    verdict: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the trail's chain and head: exit 0 when intact, 1 with what
    /// is wrong and where.
    Verify {
        #[command(flatten)]
        trail: TrailArgs,
        /// Only this gateway instance's chain in an audit database; it must
        /// be there (repeat for several). Without it, every chain there.
        #[arg(long, value_name = "NAME")]
        instance: Vec<String>,
        /// A head sluice logged (`audit chain head ... seq=SEQ mac=MAC`),
        /// kept apart from the trail: the trail must hold that record with
        /// that MAC, which a trail cut short or put back to an earlier
        /// copy, head file and all, does not (repeat for several; with an
        /// audit database, name the one instance they are of).
        #[arg(long, value_name = "SEQ:MAC", value_parser = sluice::audit::chain::Link::parse)]
        anchor: Vec<sluice::audit::chain::Link>,
    },
    /// Replay one session: who, each statement with its decision and
    /// approval, what it returned. The trail is verified first (when its
    /// key can be read): exit 1, with what is wrong, when it is not intact.
    Show {
        #[command(flatten)]
        trail: TrailArgs,
        /// The session's number (as logs and records give it).
        #[arg(long)]
        session: u64,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// The latest records, one a line (the trail verified first, as for
    /// show).
    Tail {
        #[command(flatten)]
        trail: TrailArgs,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Move the trail's oldest rotated files to DIR (never the file being
    /// written), recording each in FILE.archived so that verify tells
    /// them from deleted records. The trail is verified first, and must
    /// be intact.
    Archive {
        #[command(flatten)]
        trail: TrailArgs,
        /// Where the files go (made if missing, mode 0700).
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "acknowledge_start"
        )]
        to: Option<PathBuf>,
        /// How many of the newest rotated files to leave in place (at least
        /// one always stays: the newest holds the chain's last record while
        /// the file being written has none yet).
        #[arg(long, value_name = "N", default_value_t = 1)]
        keep: usize,
        /// Move nothing: record that the records before the trail's first
        /// were moved away by other means (by hand, before sluice audit
        /// archive existed), so that verify takes its start as acknowledged.
        /// Refused unless that late start is all verify finds wrong.
        #[arg(long, conflicts_with_all = ["to", "keep"])]
        acknowledge_start: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Make a new plugin crate from the template, in DIR/NAME.
    New {
        /// The plugin's name: lowercase letters, digits and '-'.
        name: String,
        /// Which hook the plugin serves.
        #[arg(long, value_enum, default_value_t = PluginKind::Policy)]
        kind: PluginKind,
        /// Where to make the crate's directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            audit_file,
            admin_listen,
        } => {
            let overrides = Overrides {
                listen,
                upstream,
                audit_file,
                admin_listen,
            };
            let settings = load_settings(config.as_deref(), &overrides)?;
            serve(settings, config, |_| {}, shutdown_signal())
        }
        Command::Check { config } => {
            let settings = load_settings(Some(&config), &Overrides::default())?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(Gateway::check(&settings))
                .with_context(|| format!("checking {}", config.display()))?;
            println!(
                "{}: ok ({} principals, {} plugins, upstream {}:{}, listening on {})",
                config.display(),
                settings.principals.len(),
                settings.plugins.len(),
                settings.upstream.host,
                settings.upstream.port,
                settings.listen
            );
            Ok(())
        }
        Command::HashToken { iterations } => {
            let mut token = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut token)
                .context("reading the token from standard input")?;
            let token = token.trim_end_matches(['\r', '\n']);
            if token.is_empty() {
                bail!("no token on standard input");
            }
            println!("{}", scram::make_verifier(token, iterations));
            Ok(())
        }
        Command::Demo { port } => demo::run(port),
        Command::Audit { command } => audit_command(command),
        Command::Plugin {
            command: PluginCommand::New { name, kind, dir },
        } => {
            let made = sluice::scaffold::new_plugin(&name, kind, &dir)?;
            println!(
                "made the {kind} plugin {name} in {}\n\
                 test it:  cd {0} && cargo test\n\
                 build it: cargo build --release --target wasm32-wasip2\n\
                 README.md says how to load it into sluice",
                made.display()
            );
            Ok(())
        }
    }
}

/// The trail's settings: `--audit-file` over the config's `[audit]`.
fn trail_settings(trail: &TrailArgs) -> anyhow::Result<sluice::config::AuditSettings> {
    let env = |name: &str| std::env::var(name).ok();
    let overrides = Overrides {
        audit_file: trail.audit_file.clone(),
        ..Overrides::default()
    };
    let (config, base_dir) = load_config(trail.config.as_deref())?;
    let settings = config.resolve_audit(&base_dir, &overrides, &env)?;
    settings.context("no audit trail named: give --audit-file PATH, or -c with an [audit] table")
}

fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    use sluice::audit::read;
    match command {
        AuditCommand::Verify {
            trail,
            instance,
            anchor,
        } => {
            let settings = trail_settings(&trail)?;
            if let Some(database) = &settings.postgres {
                if !anchor.is_empty() && instance.len() != 1 {
                    bail!(
                        "an anchor names a record of one gateway instance's chain: \
                         name that instance with --instance"
                    );
                }
                return verify_database(&settings, database, &instance, &anchor);
            }
            if !instance.is_empty() {
                bail!(
                    "--instance picks chains of an audit database, and this trail is a file: \
                     it holds one chain"
                );
            }
            let key = trail_key(&settings)?;
            let report = sluice::audit::verify::verify_live(
                &settings.file,
                Some(&settings.head_file),
                &key,
                &anchor,
            );
            println!("{report}");
            if let sluice::config::AuditKey::NextToTrail(path) = &settings.key {
                println!(
                    "note: the key {} sits next to the trail it protects (demo-grade): \
                     whoever can rewrite the trail can read it; configure [audit] key_file elsewhere",
                    path.display()
                );
            }
            if !report.ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Archive {
            trail,
            to,
            keep,
            acknowledge_start,
        } => {
            let settings = trail_settings(&trail)?;
            if settings.postgres.is_some() {
                bail!(
                    "archive moves a file trail's rotated files; an audit database's rows cannot be \
                     archived: verify reports rows missing at an instance's start as a problem"
                );
            }
            let key = trail_key(&settings)?;
            let head = Some(settings.head_file.as_path());
            let report = sluice::audit::verify::verify_live(&settings.file, head, &key, &[]);
            use sluice::audit::verify::FindingKind;
            if acknowledge_start {
                let only_late = report.problems_left_out == 0
                    && report.problems().next().is_some()
                    && report.problems().all(|finding| {
                        matches!(
                            finding.kind,
                            FindingKind::StartsLate | FindingKind::BeyondHead { .. }
                        )
                    })
                    && report
                        .problems()
                        .any(|finding| finding.kind == FindingKind::StartsLate);
                if !only_late {
                    eprint!("{report}");
                    bail!(
                        "nothing recorded: --acknowledge-start is for a trail whose only problem \
                         is a start moved away"
                    );
                }
                let before = sluice::audit::archive::acknowledge_start(&settings.file, &key)?;
                println!(
                    "recorded in {}: the records up to seq {} were moved away (your word for it, \
                     sealed with the key)",
                    sluice::audit::archive::lines_path(&settings.file).display(),
                    before.seq
                );
                return Ok(());
            }
            if !report.ok() && !written_while_checked(&report) {
                eprint!("{report}");
                bail!("the trail failed verification: nothing was archived");
            }
            let to = to.context("--to DIR names where the files go")?;
            let moved = sluice::audit::archive::archive(&settings.file, &key, &to, keep)?;
            if moved.is_empty() {
                println!(
                    "nothing to archive: no rotated file beyond the {} kept",
                    keep.max(1)
                );
                return Ok(());
            }
            for file in &moved {
                println!(
                    "archived {} -> {} (records through seq {})",
                    file.from.display(),
                    file.to.display(),
                    file.last.seq
                );
            }
            println!(
                "recorded in {}: keep it with the trail",
                sluice::audit::archive::lines_path(&settings.file).display()
            );
            Ok(())
        }
        AuditCommand::Show {
            trail,
            session,
            filter,
        } => {
            let settings = trail_settings(&trail)?;
            let source = open_trail(&settings)?;
            let mut filter = filter;
            if let Trail::Database(database) = &source
                && filter.instance.is_none()
            {
                let mut names = on_audit_database(sluice::audit::postgres::instances(database))?;
                names.sort();
                if names.len() > 1 {
                    bail!(
                        "the audit database holds several instances ({}), each numbering its own sessions: name one with --instance",
                        names.join(", ")
                    );
                }
                // The one there now: a gateway that writes its first rows
                // meanwhile is not read into this session.
                filter.instance = names.pop();
            }
            let filter = filter.into_filter(Some(session))?;
            let kept = source.pick(&filter, None)?;
            let intact = source.check_after_reading(&settings, filter.instance.as_deref())?;
            let picked: Vec<read::Picked<'_>> = kept
                .records
                .iter()
                .map(|(record, run)| read::Picked {
                    record,
                    run: run.as_run(),
                })
                .collect();
            print!("{}", read::show_session(&picked, session));
            warn_unreadable(kept.unreadable);
            intact.exit_if_broken();
            Ok(())
        }
        AuditCommand::Tail {
            trail,
            lines,
            filter,
        } => {
            let settings = trail_settings(&trail)?;
            let filter = filter.into_filter(None)?;
            let source = open_trail(&settings)?;
            let kept = source.pick(&filter, Some(lines))?;
            let intact = source.check_after_reading(&settings, filter.instance.as_deref())?;
            for (record, _) in &kept.records {
                println!("{}", read::one_line(record));
            }
            warn_unreadable(kept.unreadable);
            intact.exit_if_broken();
            Ok(())
        }
    }
}

/// The chain's key, for checking the trail (never made here).
fn trail_key(settings: &sluice::config::AuditSettings) -> anyhow::Result<sluice::audit::ChainKey> {
    let path = settings.key.path();
    sluice::audit::ChainKey::load(path)
        .with_context(|| format!("reading the audit key {}", path.display()))
}

/// A trail to read: its files, or its database's rows (the instances'
/// records merged by time).
enum Trail {
    Files(PathBuf),
    Database(sluice::config::UpstreamSettings),
}

/// What `show` or `tail` keeps of a trail.
struct Kept {
    /// The records picked, oldest first, with their gateway runs.
    records: Vec<(serde_json::Value, sluice::audit::read::RunKey)>,
    /// Lines that were not records.
    unreadable: usize,
}

fn open_trail(settings: &sluice::config::AuditSettings) -> anyhow::Result<Trail> {
    Ok(match &settings.postgres {
        None => Trail::Files(settings.file.clone()),
        Some(database) => Trail::Database(database.clone()),
    })
}

/// What `show` and `tail` found when they checked the trail they print.
#[must_use]
enum Intact {
    /// Verified, or not checkable (said on standard error).
    Yes,
    /// Not intact: said on standard error before the records.
    No,
}

/// Whether every problem `report` found is records past the head it read:
/// those a gateway committed while the check read the trail. Their chain
/// verifies (only the key's holder could have sealed them); the head names
/// them once their commit ends. Enough for reading the trail, not for
/// `verify`, which says the trail is whole up to a head that names its end.
fn written_while_checked(report: &sluice::audit::verify::Report) -> bool {
    report.problems_left_out == 0
        && report.problems().all(|finding| {
            matches!(
                finding.kind,
                sluice::audit::verify::FindingKind::BeyondHead { .. }
            )
        })
}

impl Intact {
    /// Ends the command with status 1, after its output, when the trail it
    /// printed is not intact — as `verify` would.
    fn exit_if_broken(self) {
        if let Intact::No = self {
            eprintln!(
                "warning: the records above come from a trail that failed verification (see the start)"
            );
            std::process::exit(1);
        }
    }
}

impl Trail {
    /// Verifies the trail `show` or `tail` has just read from, before they
    /// print it: an edited record would otherwise be read as what happened.
    /// The check comes after the read, so that it covers every record read.
    /// A reader who cannot read the key (it is kept from most people) is
    /// told that what follows is unverified; a trail that is not intact is
    /// reported, its records still shown, and the command will end with
    /// status 1.
    fn check_after_reading(
        &self,
        settings: &sluice::config::AuditSettings,
        instance: Option<&str>,
    ) -> anyhow::Result<Intact> {
        let key = match trail_key(settings) {
            Ok(key) => key,
            Err(error) => {
                eprintln!(
                    "note: the trail is shown unverified: {error:#}; \
                     sluice audit verify with the key checks it"
                );
                return Ok(Intact::Yes);
            }
        };
        let reports = match self {
            Trail::Files(path) => vec![sluice::audit::verify::verify_live(
                path,
                Some(&settings.head_file),
                &key,
                &[],
            )],
            Trail::Database(database) => {
                let named: Vec<String> = instance.map(str::to_owned).into_iter().collect();
                let own = own_instance(settings);
                on_audit_database(sluice::audit::postgres::verify_chains(
                    database,
                    chains(&named, &own),
                    &key,
                    &[],
                ))?
            }
        };
        let broken: Vec<_> = reports
            .iter()
            .filter(|report| !report.ok() && !written_while_checked(report))
            .collect();
        if broken.is_empty() {
            return Ok(Intact::Yes);
        }
        eprintln!(
            "warning: the audit trail failed verification: what follows may not be what was recorded"
        );
        for report in broken {
            eprint!("{report}");
        }
        Ok(Intact::No)
    }

    /// The records `filter` picks, a record at a time — a trail may be far
    /// larger than memory — keeping only the last `last` when given.
    fn pick(
        &self,
        filter: &sluice::audit::read::Filter,
        last: Option<usize>,
    ) -> anyhow::Result<Kept> {
        use sluice::audit::read;
        use std::collections::VecDeque;
        let keep = |kept: &mut VecDeque<_>, picked| {
            kept.push_back(picked);
            if last.is_some_and(|last| kept.len() > last) {
                kept.pop_front();
            }
        };
        let mut kept = VecDeque::new();
        let unreadable = match self {
            Trail::Files(path) => {
                let mut sieve = filter.sieve();
                read::scan(path, |record| {
                    if let Some(run) = sieve.offer(&record) {
                        keep(&mut kept, (record, run));
                    }
                })?
            }
            Trail::Database(database) => {
                let mut unreadable = 0;
                // Each instance's last, then the last of them all; the
                // instances in the database's order, as they come.
                let mut of_instance: Vec<(String, VecDeque<_>)> = Vec::new();
                let mut sieve = filter.sieve();
                on_audit_database(sluice::audit::postgres::scan_chains(
                    database,
                    filter.instance.as_deref(),
                    |instance, line| {
                        if of_instance.last().is_none_or(|(name, _)| name != instance) {
                            of_instance.push((instance.to_owned(), VecDeque::new()));
                        }
                        unreadable += read::scan_lines([line.as_slice()], |record| {
                            if let (Some(run), Some((_, mine))) =
                                (sieve.offer(&record), of_instance.last_mut())
                            {
                                keep(mine, (record, run));
                            }
                        });
                    },
                ))?;
                kept.extend(of_instance.into_iter().flat_map(|(_, mine)| mine));
                // Instances interleave in time. (Each instance's last are
                // the last of its records in time too, as long as its
                // clock never stepped back.)
                kept.make_contiguous().sort_by(|(a, _), (b, _)| {
                    fn time(record: &serde_json::Value) -> &str {
                        record["time"].as_str().unwrap_or("")
                    }
                    time(a).cmp(time(b))
                });
                if let Some(last) = last {
                    let extra = kept.len().saturating_sub(last);
                    kept.drain(..extra);
                }
                unreadable
            }
        };
        Ok(Kept {
            records: kept.into(),
            unreadable,
        })
    }
}

/// Runs a read of the audit database to its end, for a CLI command.
fn on_audit_database<T>(
    read: impl Future<Output = Result<T, sluice::audit::postgres::PgError>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(read)
        .context("reading the audit database")
}

/// The instance an audit database must hold a chain of: the gateway's
/// own, when its config names it (`[audit] instance`). Its rows and head
/// row deleted together would leave nothing else to find.
fn own_instance(settings: &sluice::config::AuditSettings) -> Vec<String> {
    settings
        .instance_named
        .then(|| settings.instance.clone())
        .into_iter()
        .collect()
}

/// The chains a check of an audit database covers: those `named` on the
/// command line, else every one there and the gateway's `own`.
fn chains<'a>(named: &'a [String], own: &'a [String]) -> sluice::audit::verify::Chains<'a> {
    use sluice::audit::verify::Chains;
    if named.is_empty() {
        Chains::Found { expected: own }
    } else {
        Chains::Named(named)
    }
}

/// `sluice audit verify` for the PostgreSQL sink: each instance's chain
/// (each of those `named`, else each there and the gateway's own, which
/// must be there) against its head row, and `anchors`.
fn verify_database(
    settings: &sluice::config::AuditSettings,
    database: &sluice::config::UpstreamSettings,
    named: &[String],
    anchors: &[sluice::audit::chain::Link],
) -> anyhow::Result<()> {
    let key = trail_key(settings)?;
    let own = own_instance(settings);
    let reports = on_audit_database(sluice::audit::postgres::verify_chains(
        database,
        chains(named, &own),
        &key,
        anchors,
    ))?;
    // Only when nothing was named or configured: an instance expected
    // always has a report.
    if reports.is_empty() {
        println!("audit database {}: no records yet", database.database);
        return Ok(());
    }
    let mut intact = true;
    for report in &reports {
        println!("{report}");
        intact &= report.ok();
    }
    if !intact {
        std::process::exit(1);
    }
    Ok(())
}

impl FilterArgs {
    fn into_filter(self, session: Option<u64>) -> anyhow::Result<sluice::audit::read::Filter> {
        let filter = sluice::audit::read::Filter {
            instance: self.instance,
            session,
            principal: self.principal,
            since: self.since,
            until: self.until,
            verdict: self.verdict,
        };
        filter.check().map_err(anyhow::Error::msg)?;
        Ok(filter)
    }
}

fn warn_unreadable(count: usize) {
    if count > 0 {
        eprintln!(
            "warning: {count} line(s) of the trail are not records (a torn write?): run sluice audit verify"
        );
    }
}

/// Structured logs on standard error: `SLUICE_LOG` filters them (as
/// `RUST_LOG` would, default `info`), `SLUICE_LOG_FORMAT=json` makes them
/// one JSON object a line for log shippers. Query text, parameters and
/// server messages are never logged: they may hold card numbers.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file or a journal
    // gets plain text its readers and shippers can search.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The config file at `path` (or none: all defaults) and the directory its
/// relative paths start from.
fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, PathBuf)> {
    Ok(match path {
        Some(path) => {
            let config = Config::load(path)?;
            (config, sluice::config::base_dir(path))
        }
        None => (Config::default(), PathBuf::from(".")),
    })
}

fn load_settings(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
    let (config, base_dir) = load_config(path)?;
    let settings = config.resolve(&base_dir, overrides, &|name| std::env::var(name).ok())?;
    Ok(settings)
}

/// Serves on one single-threaded runtime per worker thread; the main
/// thread accepts connections, reloads plugins when `config` or the files
/// it names change, and waits for `shutdown`. `on_ready` runs once the
/// listening socket is bound.
fn serve(
    settings: Settings,
    config: Option<PathBuf>,
    on_ready: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let workers = Workers::start(settings.worker_threads)?;
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = main.block_on(async {
        // SIGHUP asks for a reload. Its default action ends the process, so
        // it is taken from the start: one that comes while the plugins
        // still compile, or with no config to reload, is not a kill.
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut gateway = Gateway::bind(settings).await?;
        match config {
            // The watcher listens for SIGHUP from here on, on the same
            // listener: one sent while the plugins compiled still counts.
            Some(config) => {
                gateway = gateway.watch_config(config);
                if let Some(hangups) = hangups.take() {
                    gateway = gateway.hangups_since(hangups);
                }
            }
            None => {
                if let Some(mut hangups) = hangups.take() {
                    tokio::spawn(async move {
                        while hangups.recv().await.is_some() {
                            tracing::info!(
                                "SIGHUP: nothing to reload (sluice serve was started without -c)"
                            );
                        }
                    });
                }
            }
        }
        tracing::info!(
            address = %gateway.local_addr(),
            workers = workers.handles.len(),
            "sluice is serving"
        );
        if let Some(admin) = gateway.admin_addr() {
            tracing::info!(address = %admin, "admin port: /metrics /healthz /readyz");
        }
        on_ready(gateway.local_addr());
        gateway.serve_on(&workers.handles, shutdown).await;
        anyhow::Ok(())
    });
    workers.stop();
    served
}

/// Threads each running a single-threaded runtime until stopped.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(count: usize) -> anyhow::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::with_capacity(count),
            stop: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a worker runtime")?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stop.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .context("starting a worker thread")?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Stops the runtimes (the gateway has drained its sessions by now).
    fn stop(self) {
        drop(self.stop);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down gracefully"),
    }
}
