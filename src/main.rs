//! The `sluice` command: run the proxy, check a config, print the config schema.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Connection-pooling proxy for PostgreSQL and MySQL/MariaDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the endpoints of a config file.
    Run {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// `text` for people, `json` (one object per line) for log pipelines and audits.
        #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// Also reload when the config file's content changes (read every 2 s); SIGHUP
        /// reloads either way.
        #[arg(long, env = "SLUICE_WATCH_CONFIG")]
        watch_config: bool,
    },
    /// Validate a config file and print every problem with its YAML path.
    CheckConfig { file: PathBuf },
    /// Print the JSON schema of the config file.
    PrintSchema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match sluice::app::preflight::load(&file) {
            Ok(_) => {
                eprintln!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!(
                    "{}: {} problem(s)\n{errors}",
                    file.display(),
                    errors.0.len()
                );
                ExitCode::FAILURE
            }
        },
        Command::PrintSchema => {
            #[allow(clippy::print_stdout)]
            {
                print!("{}", sluice::config::schema_json());
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            log_format,
            watch_config,
        } => run(config, log_format, watch_config),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn run(path: PathBuf, format: LogFormat, watch: bool) -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sluice=info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let preflight = match sluice::app::preflight::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "{}: {} problem(s)\n{errors}",
                path.display(),
                errors.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    // One worker: a current-thread runtime does the same work without the work-stealing
    // scheduler's cross-thread bookkeeping on every wake-up.
    let mut builder = match preflight.config.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match sluice::app::App::build(&preflight).await {
            Ok(app) => {
                let reload = sluice::app::ReloadSource { path, watch };
                app.run(Some(reload), sluice::shutdown::signal()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                ExitCode::FAILURE
            }
        }
    })
}
