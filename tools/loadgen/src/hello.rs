//! `letsgo-loadgen hello`: the smallest useful HTTP server on the same stack as the gateway
//! (tokio and hyper, HTTP/1.1 keep-alive), answering a fixed envelope. What the load generator
//! gets from it is this machine's HTTP ceiling, against which the gateway is compared.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// About the size of the gateway's envelope around a small answer.
const BODY: &[u8] = br#"{"code":0,"msg":"success","data":{"hello":"world"}}"#;

/// Serves until the process is stopped. Prints `listening on http://ADDR` on stdout once bound,
/// so a script can start it on port 0 and read the address.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: keep serving the connections already open.
            Err(e) => {
                eprintln!("hello: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
