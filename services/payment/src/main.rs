use clap::Parser;
use letsgo_payment::{Config, run, run_command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        return letsgo_platform::grpc::run_command("letsgo-payment", run_command(&config, command))
            .await;
    }
    letsgo_platform::telemetry::init_logging(&config.telemetry);
    let grpc = config.grpc.clone();
    letsgo_platform::grpc::run_until_signalled(
        letsgo_platform::discovery::ServiceName::Payment,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
