use clap::Parser;
use letsgo_platform::assembly;
use letsgo_platform::discovery::ServiceName;
use letsgo_user::{Config, run, run_command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        return assembly::run_command(ServiceName::User, run_command(&config, command)).await;
    }
    let (telemetry, grpc) = (config.telemetry.clone(), config.grpc.clone());
    assembly::run_until_signalled(
        ServiceName::User,
        &telemetry,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
