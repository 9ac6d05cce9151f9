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

#[derive(Subcommand)]
enum Command {
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
