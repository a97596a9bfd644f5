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
        } => {
            let overrides = Overrides { listen, upstream };
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

/// Structured logs on standard error: `SLUICE_LOG` filters them (as
/// `RUST_LOG` would, default `info`), `SLUICE_LOG_FORMAT=json` makes them
/// one JSON object a line for log shippers. Query text, parameters and
/// server messages are never logged: they may hold card numbers.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_settings(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
    let (config, base_dir) = match path {
        Some(path) => {
            let config = Config::load(path)?;
            let base = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (config, base)
        }
        None => (Config::default(), PathBuf::from(".")),
    };
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
        let mut gateway = Gateway::bind(settings).await?;
        if let Some(config) = config {
            gateway = gateway.watch_config(config);
        }
        tracing::info!(
            address = %gateway.local_addr(),
            workers = workers.handles.len(),
            "sluice is serving"
        );
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
