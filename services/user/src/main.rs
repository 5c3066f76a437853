use clap::Parser;
use letsgo_user::{Config, default_addresses, run, run_command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        letsgo_platform::telemetry::init_command_logging();
        return match run_command(&config, command).await {
            Ok(answer) => {
                println!("{answer}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("letsgo-user: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    letsgo_platform::telemetry::init_logging(&config.telemetry);
    let grpc = config.grpc.clone();
    letsgo_platform::grpc::run_until_signalled(
        "letsgo-user",
        &grpc,
        default_addresses(),
        |listeners, shutdown| run(config, listeners, shutdown),
    )
    .await
}
