use clap::Parser;
use letsgo_order::{Config, run, run_command};
use letsgo_platform::assembly;
use letsgo_platform::discovery::ServiceName;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        return assembly::run_command(ServiceName::Order, run_command(&config, command)).await;
    }
    let (telemetry, grpc) = (config.telemetry.clone(), config.grpc.clone());
    assembly::run_until_signalled(
        ServiceName::Order,
        &telemetry,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
