use clap::Parser;
use letsgo_platform::assembly;
use letsgo_platform::discovery::ServiceName;
use letsgo_product::{Config, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let (telemetry, grpc) = (config.telemetry.clone(), config.grpc.clone());
    assembly::run_until_signalled(
        ServiceName::Product,
        &telemetry,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
