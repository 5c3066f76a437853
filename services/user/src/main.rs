use clap::Parser;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::shutdown::Shutdown;
use letsgo_user::{Config, default_addresses, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    letsgo_platform::telemetry::init_logging(&config.telemetry);
    let (grpc, admin) = default_addresses();
    let result = async {
        let listeners = Listeners::bind(&config.grpc, grpc, admin).await?;
        run(config, listeners, Shutdown::on_signals()).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "user service failed");
            eprintln!("letsgo-user: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
