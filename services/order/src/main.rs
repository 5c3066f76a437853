use clap::Parser;
use letsgo_order::{Config, run, run_command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        return letsgo_platform::grpc::run_command("letsgo-order", run_command(&config, command))
            .await;
    }
    letsgo_platform::telemetry::init_logging(&config.telemetry);
    let grpc = config.grpc.clone();
    letsgo_platform::grpc::run_until_signalled(
        letsgo_platform::discovery::ServiceName::Order,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
