use clap::Parser;
use letsgo_gateway::{Config, run};
use letsgo_platform::listen;
use letsgo_platform::shutdown::Shutdown;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let traces = match letsgo_platform::telemetry::init_logging(&config.telemetry, "letsgo-gateway")
    {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("letsgo-gateway: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = async {
        let listener = listen::bind(config.listen)
            .await
            .map_err(|error| format!("GATEWAY_LISTEN {}: {error}", config.listen))?;
        let admin = listen::bind(config.admin_listen)
            .await
            .map_err(|error| format!("ADMIN_LISTEN {}: {error}", config.admin_listen))?;
        run(config, listener, admin, Shutdown::on_signals()).await
    }
    .await;
    // The spans of the last requests.
    traces.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gateway failed");
            eprintln!("letsgo-gateway: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
