//! `letsgo-loadgen`: load against a running shop, or the bare server it is compared with.

use std::process::ExitCode;

use clap::Parser;
use letsgo_loadgen::config::{Cli, Command};
use letsgo_loadgen::{flash_sale, hello, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().expect("a tokio runtime");
    match cli.command {
        Some(Command::FlashSale(args)) => {
            let json = args.json.clone();
            let report = match runtime.block_on(flash_sale::run(args)) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("letsgo-loadgen flash-sale: {e}");
                    return ExitCode::FAILURE;
                }
            };
            print!("{}", report.to_table());
            if let Err(e) = write_json(json.as_deref(), &report) {
                eprintln!("letsgo-loadgen: {e}");
                return ExitCode::FAILURE;
            }
            if report.held() {
                ExitCode::SUCCESS
            } else {
                eprintln!("letsgo-loadgen flash-sale: the sale broke a promise (see above)");
                ExitCode::FAILURE
            }
        }
        Some(Command::Hello { listen }) => match runtime.block_on(hello::serve(listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("letsgo-loadgen hello: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            let json = cli.load.json.clone();
            // The load itself runs on lanes of its own (one per thread, see `lanes`); this
            // runtime sets the shop up, prints progress and gathers the results.
            let lanes = cli.threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let report = match runtime.block_on(run::run(cli.load, lanes)) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("letsgo-loadgen: {e}");
                    return ExitCode::FAILURE;
                }
            };
            print!("{}", report.to_table());
            if let Err(e) = write_json(json.as_deref(), &report) {
                eprintln!("letsgo-loadgen: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}

/// Writes the report as JSON to `path`, when one was asked for.
fn write_json(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report).expect("a report serialises");
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}
