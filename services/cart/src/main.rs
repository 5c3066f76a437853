use clap::Parser;
use letsgo_cart::{Config, run};
use letsgo_platform::assembly;
use letsgo_platform::discovery::ServiceName;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let (telemetry, grpc) = (config.telemetry.clone(), config.grpc.clone());
    assembly::run_until_signalled(
        ServiceName::Cart,
        &telemetry,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
