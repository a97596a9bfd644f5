//! `sluice demo`: the quickstart. A throwaway PostgreSQL from the machine's
//! binaries, seeded with fake cards, and sluice in front of it, so gated and
//! raw results can be compared side by side. Ctrl-C stops both and removes
//! the cluster.
//!
//! The quickstart files are compiled into the binary, so this works from any
//! directory: the demo writes them to a directory of its own, serves from
//! there and watches them, so a newcomer can edit the rules and see the next
//! statement obey.

use anyhow::Context;
use sluice::config::{Config, Overrides};
use sluice::pg_cluster::{HostAuth, PgCluster};

/// The quickstart's files, as `examples/quickstart/` has them.
const QUICKSTART_FILES: &[(&str, &str)] = &[
    (
        "sluice.toml",
        include_str!("../../examples/quickstart/sluice.toml"),
    ),
    (
        "principals.toml",
        include_str!("../../examples/quickstart/principals.toml"),
    ),
    (
        "guard.toml",
        include_str!("../../examples/quickstart/guard.toml"),
    ),
    (
        "access.toml",
        include_str!("../../examples/quickstart/access.toml"),
    ),
];
const SEED_SQL: &str = include_str!("../../examples/quickstart/seed.sql");
const DATABASE: &str = "payments";
/// The role sluice logs in upstream with; demo principals never see it.
const SERVICE_ROLE: &str = "sluice_gateway";
const PRINCIPALS: &[(&str, &str)] = &[
    ("agent", "agent-demo-token"),
    ("analyst", "analyst-demo-token"),
    ("admin", "admin-demo-token"),
];

pub fn run(first_port: u16) -> anyhow::Result<()> {
    println!("starting a throwaway PostgreSQL ...");
    let service_password = random_secret();
    let cluster = start_cluster(&service_password)?;
    let served = serve_in_front_of(&cluster, first_port, service_password);
    println!("stopping PostgreSQL and removing the cluster ...");
    cluster.shutdown().context("stopping the cluster")?;
    served
}

fn serve_in_front_of(
    cluster: &PgCluster,
    first_port: u16,
    service_password: String,
) -> anyhow::Result<()> {
    let free_port_from = |first: u16| {
        (first..first.saturating_add(50))
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
    };
    let port =
        free_port_from(first_port).context("no free port for sluice near the one asked for")?;
    let admin_port = free_port_from(port.saturating_add(1))
        .context("no free port for the admin port near sluice's")?;
    let files = tempfile::Builder::new()
        .prefix("sluice-demo-")
        .tempdir()
        .context("a directory for the quickstart's files")?;
    for (name, text) in QUICKSTART_FILES {
        let path = files.path().join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let config_path = files.path().join("sluice.toml");
    let config = Config::load(&config_path)?;
    let overrides = Overrides {
        listen: Some(format!("127.0.0.1:{port}")),
        upstream: Some(format!(
            "postgres://{SERVICE_ROLE}@127.0.0.1:{}/{DATABASE}",
            cluster.port()
        )),
        audit_file: None,
        admin_listen: Some(format!("127.0.0.1:{admin_port}")),
    };
    let settings = config.resolve(files.path(), &overrides, &move |name| {
        (name == "SLUICE_UPSTREAM_PASSWORD").then(|| service_password.clone())
    })?;

    let files_path = files.path().to_owned();
    // The trail and its key as sluice resolved them: the commands printed
    // name the key, so that a SLUICE_AUDIT_KEY_FILE in the reader's shell
    // does not make every record read as modified.
    let trail = settings.audit.as_ref().map(|audit| {
        (
            audit.file.display().to_string(),
            audit.key.path().display().to_string(),
        )
    });
    let announce = |_| {
        println!();
        println!(
            "sluice is serving {DATABASE} on 127.0.0.1:{port}, in front of PostgreSQL on 127.0.0.1:{}.",
            cluster.port()
        );
        println!(
            "Demo principals (demo-only tokens, published in examples/quickstart/principals.toml):"
        );
        for (name, token) in PRINCIPALS {
            println!(
                "  PGPASSWORD={token} psql \"host=127.0.0.1 port={port} dbname={DATABASE} user={name}\""
            );
        }
        println!("Straight to PostgreSQL, bypassing sluice (to compare):");
        println!(
            "  PGPASSWORD={} psql \"host=127.0.0.1 port={} dbname={DATABASE} user=postgres\"",
            cluster.superuser_password(),
            cluster.port()
        );
        println!();
        println!(
            "The rules are in {}: edit guard.toml or access.toml and the next statement obeys them.",
            files_path.display()
        );
        println!(
            "Try, as agent:  DELETE FROM orders;   SELECT pan FROM cards;   SELECT id, status FROM orders;"
        );
        println!(
            "Try, as analyst, then straight to PostgreSQL:  SELECT * FROM cards;   (card numbers masked only through sluice)"
        );
        println!(
            "And as analyst:  SELECT pan || 'x' FROM cards;   (computing on a card number needs approval: it would unmask it)"
        );
        if let Some((trail, key)) = &trail {
            println!(
                "Every session and statement is on the record in {trail} (masked, hash-chained; kept until the demo stops):"
            );
            let audit = format!("SLUICE_AUDIT_KEY_FILE={key} sluice audit");
            println!("  {audit} tail --audit-file {trail}");
            println!("  {audit} show --audit-file {trail} --session N   (N from tail)");
            println!("  {audit} verify --audit-file {trail}");
        }
        println!("Metrics, health and readiness for operators:");
        println!("  curl -s http://127.0.0.1:{admin_port}/metrics   (also /healthz, /readyz)");
        println!();
        println!("Press Ctrl-C to stop both and remove the cluster.");
    };
    crate::serve(settings, Some(config_path), announce, async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn start_cluster(service_password: &str) -> anyhow::Result<PgCluster> {
    let cluster = PgCluster::builder()
        .auth(HostAuth::ScramSha256)
        .start()
        .context("the quickstart needs PostgreSQL's server binaries")?;
    cluster.create_database(DATABASE)?;
    let seed = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .join("seed.sql");
    std::fs::write(&seed, SEED_SQL).with_context(|| format!("writing {}", seed.display()))?;
    cluster.run_sql_file(DATABASE, &seed)?;
    // A service role, not a superuser, with the rights of the most
    // privileged demo group (admins run DDL): sluice logs in as it, so the
    // demo shows the credential split a production setup uses.
    let password = service_password.replace('\'', "''");
    cluster.psql(
        DATABASE,
        &format!(
            "CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{password}';\n\
             GRANT USAGE, CREATE ON SCHEMA public TO {SERVICE_ROLE};\n\
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {SERVICE_ROLE};\n\
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {SERVICE_ROLE};"
        ),
    )?;
    Ok(cluster)
}

fn random_secret() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}
