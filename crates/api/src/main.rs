//! `modelgen` binary entry point.

use clap::Parser as _;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = modelgen_api::cli::Cli::parse();
    match modelgen_api::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
