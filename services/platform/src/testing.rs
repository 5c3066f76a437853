//! For tests that run services inside their own process: each on free loopback ports, stopped
//! by the test's [`Shutdown`], and reached once it answers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::grpc::Listeners;
use crate::shutdown::Shutdown;

/// Binds a service's gRPC and admin listeners on free loopback ports and spawns `run` on them
/// (typically `|listeners, shutdown| letsgo_x::run(config, listeners, shutdown)`). Answers the
/// gRPC address and the service's task.
pub async fn start_on_free_ports<F, Fut>(
    run: F,
    shutdown: &Shutdown,
) -> (SocketAddr, JoinHandle<Fut::Output>)
where
    F: FnOnce(Listeners, Shutdown) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listeners = Listeners {
        grpc: TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free gRPC port"),
        admin: TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free admin port"),
    };
    let addr = listeners.grpc.local_addr().expect("the gRPC port");
    let task = tokio::spawn(run(listeners, shutdown.clone()));
    (addr, task)
}

/// A channel to the gRPC server at `addr`, once it accepts connections (within 5 s).
pub async fn channel_when_up(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("a gRPC address");
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} did not come up");
}
