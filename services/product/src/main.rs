use clap::Parser;
use letsgo_product::{Config, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    letsgo_platform::telemetry::init_logging(&config.telemetry);
    let grpc = config.grpc.clone();
    letsgo_platform::grpc::run_until_signalled(
        letsgo_platform::discovery::ServiceName::Product,
        &grpc,
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
