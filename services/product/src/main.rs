use clap::Parser;
use letsgo_product::{Config, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let service = letsgo_platform::discovery::ServiceName::Product;
    let traces = letsgo_platform::telemetry::init_logging(&config.telemetry, &service.binary());
    let grpc = config.grpc.clone();
    let exit = letsgo_platform::grpc::run_until_signalled(service, &grpc, |listeners, shutdown| {
        run(config, listeners, shutdown)
    })
    .await;
    // The spans of the last requests.
    traces.shutdown().await;
    exit
}
