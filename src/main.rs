//! The `handover` binary: parse the command line, set up logs, run the command, map errors to one line.

use clap::Parser;
use handover::cli::Cli;
use std::process::ExitCode;

/// Exit code for bad flags or arguments.
const EXIT_USAGE: u8 = 2;
const EXIT_ERROR: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {}", first_line(&err.to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let traces = handover::telemetry::tracing::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(handover::commands::run(cli, traces.clone()));
    // Blocking hash loops are abandoned on the forced path; do not wait for them to notice.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    // Spans were flushed in `deregistering`; this only bounds the exporter's own shutdown.
    traces.shutdown(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", first_line(&format!("{err:#}")));
            // A configuration that cannot work is a bad command line, like a bad flag.
            if err
                .chain()
                .any(|cause| cause.is::<handover::app::ConfigError>())
            {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

/// clap and anyhow may print several lines; the contract is one line naming the problem.
fn first_line(text: &str) -> String {
    let text = text.trim().trim_start_matches("error: ");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}
