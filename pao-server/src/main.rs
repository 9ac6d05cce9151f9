//! `pao`: the PAO command line. `pao validate <dir>` checks a catalog folder, `pao schema`
//! prints the published item JSON Schema, `pao form <item.yaml>` prints the form schema a UI
//! renders for one item.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use pao_core::catalog::{Catalog, LoadOptions, load_item, render_all};

#[derive(Parser)]
#[command(
    name = "pao",
    version,
    about = "PAO, the Platform Automation Orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "PAO_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address.
    #[arg(long, env = "PAO_BIND")]
    bind: Option<String>,
    /// Database URL (`sqlite://./data/pao.db`, `postgres://...`).
    #[arg(long = "database", env = "PAO_DATABASE_URL")]
    database_url: Option<String>,
    /// Catalog folder.
    #[arg(long, env = "PAO_CATALOG")]
    catalog: Option<PathBuf>,
    /// Workers in this process.
    #[arg(long, env = "PAO_WORKERS")]
    workers: Option<usize>,
    /// `text` or `json` logs.
    #[arg(long, env = "PAO_LOG_FORMAT")]
    log_format: Option<String>,
    /// Start local fakes of JIRA, GitHub, Terraform Cloud and the example REST services,
    /// point the catalog at them and print development tokens (needs the `sandbox` feature,
    /// on by default).
    #[arg(long)]
    sandbox: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server with in-process workers.
    Serve(ServeArgs),
    /// Run workers only (no HTTP API), against the configured database.
    Worker(ServeArgs),
    /// Validate every item of a catalog folder; exit 1 when any has errors.
    Validate {
        /// The catalog folder.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Plugin action types to accept (`--plugin servicenow-incident`), repeatable.
        #[arg(long = "plugin")]
        plugins: Vec<String>,
    },
    /// Print the catalog item JSON Schema (Schema v2.0).
    Schema {
        /// Print the `catalog.yaml` schema instead.
        #[arg(long)]
        settings: bool,
    },
    /// Administration of a PAO database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the form schema (JSON Schema 2020-12 + UI hints) of one item file.
    Form {
        /// The item file.
        file: PathBuf,
        /// Plugin action types to accept, repeatable.
        #[arg(long = "plugin")]
        plugins: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print the `token_sha256` value of an API token for `[[auth.tokens]]`; the token is
    /// read from standard input (one line), so it stays out of shell history and `ps`.
    HashToken,
    /// Write an online, consistent copy of a SQLite database to a new file.
    Backup {
        /// The new file (must not exist).
        file: PathBuf,
        /// The database URL.
        #[arg(
            long,
            env = "PAO_DATABASE_URL",
            default_value = "sqlite://./data/pao.db"
        )]
        database: String,
    },
}

fn options(plugins: &[String]) -> LoadOptions {
    plugins
        .iter()
        .fold(LoadOptions::default(), |o, p| o.with_plugin(p, None))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args, true),
        Command::Worker(args) => serve::run(args, false),
        Command::Admin {
            command: AdminCommand::HashToken,
        } => {
            let mut token = String::new();
            std::io::stdin()
                .read_line(&mut token)
                .context("cannot read the token from standard input")?;
            let token = token.trim_end_matches(['\r', '\n']);
            if token.is_empty() {
                anyhow::bail!(
                    "no token on standard input (`printf %s \"$TOKEN\" | pao admin hash-token`)"
                );
            }
            println!("{}", pao_server::config::hash_token(token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            dir,
            format,
            plugins,
        } => {
            let catalog = Catalog::load(&dir, &options(&plugins))
                .with_context(|| format!("cannot read catalog folder {}", dir.display()))?;
            match format {
                Format::Human => {
                    print!("{}", render_all(catalog.diagnostics()));
                    println!("{} item(s) valid in {}", catalog.len(), dir.display());
                }
                Format::Json => {
                    let out = serde_json::json!({
                        "valid_items": catalog.items().map(|i| serde_json::json!({
                            "id": i.id(), "version": i.version(), "file": i.file, "content_hash": i.content_hash,
                        })).collect::<Vec<_>>(),
                        "diagnostics": catalog.diagnostics(),
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
            }
            Ok(if catalog.has_errors() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Admin {
            command: AdminCommand::Backup { file, database },
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let store = pao_store::SqlStore::open(&database)
                    .await
                    .with_context(|| "cannot open the database")?;
                store
                    .backup_to(&file.to_string_lossy())
                    .await
                    .with_context(|| format!("backup to {} failed", file.display()))?;
                println!("backed up to {}", file.display());
                Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
            })
        }
        Command::Schema { settings } => {
            let text = if settings {
                pao_core::catalog::SETTINGS_SCHEMA
            } else {
                pao_core::catalog::ITEM_SCHEMA
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Form { file, plugins } => {
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = file.to_string_lossy();
            let (item, diags) = load_item(&name, &source, &options(&plugins));
            let Some(item) = item else {
                eprint!("{}", render_all(&diags));
                return Ok(ExitCode::from(1));
            };
            let form = pao_core::form::form_schema(&item.item);
            println!("{}", serde_json::to_string_pretty(&form)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

mod serve {
    use std::process::ExitCode;

    use anyhow::Context as _;
    use pao_server::config::ServerConfig;
    use pao_server::state::AppState;

    use super::ServeArgs;

    /// `--sandbox`: the fakes of `pao_server::sandbox`, or a clear error when this binary was
    /// built without them.
    mod sandbox {
        #[cfg(feature = "sandbox")]
        pub use pao_server::sandbox::prepare;

        #[cfg(not(feature = "sandbox"))]
        pub async fn prepare(
            _: pao_server::config::ServerConfig,
        ) -> anyhow::Result<(
            pao_server::config::ServerConfig,
            pao_server::state::Overrides,
            std::convert::Infallible,
            String,
        )> {
            anyhow::bail!(
                "--sandbox: this `pao` was built without the `sandbox` feature (it is on by default; rebuild without `--no-default-features`)"
            )
        }
    }

    fn config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
        let mut c = match &args.config {
            Some(p) => ServerConfig::from_file(p)?,
            None => ServerConfig::default(),
        };
        if let Some(v) = &args.bind {
            c.bind = v.clone();
        }
        if let Some(v) = &args.database_url {
            c.database_url = v.clone();
        }
        if let Some(v) = &args.catalog {
            c.catalog = v.clone();
        }
        if let Some(v) = args.workers {
            c.workers = v;
        }
        if let Some(v) = &args.log_format {
            c.log_format = v.clone();
        }
        Ok(c)
    }

    fn init_logs(format: &str) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("PAO_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let b = tracing_subscriber::fmt().with_env_filter(filter);
        if format == "json" {
            let _ = b.json().try_init();
        } else {
            let _ = b.try_init();
        }
    }

    pub fn run(args: ServeArgs, api: bool) -> anyhow::Result<ExitCode> {
        let config = config(&args)?;
        init_logs(&config.log_format);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = runtime.block_on(async move {
            let started = std::time::Instant::now();
            let (config, over, _sandbox, banner) = if args.sandbox {
                let (c, o, s, b) = sandbox::prepare(config).await?;
                (c, o, Some(s), Some(b))
            } else {
                (config, Default::default(), None, None)
            };
            let workers = config.workers;
            let drain_timeout = config.drain_timeout_secs;
            let bind = config.bind.clone();
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            let state = AppState::build(config, over).await?;
            let catalog = state.orch.catalog();
            let errors = catalog
                .diagnostics()
                .iter()
                .filter(|d| d.is_error())
                .count();
            if errors > 0 {
                eprint!("{}", pao_core::catalog::render_all(catalog.diagnostics()));
                tracing::warn!(errors, "some catalog items have errors and are not offered");
            }
            let listener = if api {
                Some(
                    tokio::net::TcpListener::bind(&bind)
                        .await
                        .with_context(|| format!("cannot listen on {bind}"))?,
                )
            } else {
                None
            };
            let running = pao_server::serve::start(state, listener, workers)?;
            tracing::info!(
                addr = %running.addr,
                items = catalog.len(),
                workers,
                ready_ms = started.elapsed().as_millis() as u64,
                "pao ready"
            );
            if let Some(b) = banner {
                println!("{}", b.replace("{addr}", &running.addr.to_string()));
            }
            if api {
                // Scripts (and the sandbox test) read the bound address from here.
                println!("listening on {scheme}://{}", running.addr);
            }
            pao_server::serve::signal().await;
            let timeout = std::time::Duration::from_secs(drain_timeout);
            tracing::info!(
                drain_timeout_secs = drain_timeout,
                "shutting down: not ready, no new work is claimed; runs in flight get the drain time to finish, then are handed back to other replicas (a second signal hands them back at once)"
            );
            let drained = running.drain(timeout, pao_server::serve::signal()).await;
            if drained.finished_in_time {
                tracing::info!("drained: every run in flight finished");
            } else {
                tracing::info!(
                    handed_back = drained.handed_back,
                    "drained: runs still in flight were handed back"
                );
            }
            Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
        });
        // Blocking work still running (a plugin compile) does not hold the exit.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        result
    }
}
