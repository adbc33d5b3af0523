//! `modelgen` binary entry point.

use clap::Parser as _;

use std::io::Write as _;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = modelgen_api::cli::Cli::parse();
    let result = modelgen_api::cli::run(cli).await;
    modelgen_api::telemetry::flush_logs();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            match e.downcast_ref::<modelgen_api::cli::PartialFailure>() {
                Some(partial) => std::process::ExitCode::from(partial.status),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
