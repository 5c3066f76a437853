//! One keep-alive HTTP/1.1 connection per worker, on hyper's bare client: no pool, no
//! per-request allocation beyond the request itself, so the generator costs the machine as
//! little as possible (it shares the cores with what it measures).

use std::fmt;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: `http://host:port`, plain HTTP only (the load stays on this machine).
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    host: HeaderValue,
}

impl Target {
    /// The scheme and authority of `url`; its path, if any, is returned separately.
    pub fn parse(url: &str) -> Result<(Target, String), String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("'{url}': only http:// URLs are supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{url}' has no host"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok((Target { authority, host }, path))
    }
}

/// A finished exchange: the status and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a request got no answer; the connection is dropped and reopened for the next one.
#[derive(Debug)]
pub enum Failure {
    Connect(std::io::Error),
    Http(hyper::Error),
    Timeout,
}

impl Failure {
    /// A short label for the error counts.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Http(_) => "transport",
            Failure::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Http(e) => write!(f, "HTTP error: {e}"),
            Failure::Timeout => f.write_str("no answer in time"),
        }
    }
}

/// A request to send: method, path with query, and what goes with it.
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub json: Option<Vec<u8>>,
    pub header: Option<(HeaderName, String)>,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str) -> Call<'a> {
        Call {
            method: Method::GET,
            path,
            token: None,
            json: None,
            header: None,
        }
    }

    pub fn with_json(method: Method, path: &'a str, body: &serde_json::Value) -> Call<'a> {
        Call {
            method,
            path,
            token: None,
            json: Some(serde_json::to_vec(body).expect("a JSON value serialises")),
            header: None,
        }
    }

    pub fn token(mut self, token: Option<&'a str>) -> Call<'a> {
        self.token = token;
        self
    }

    pub fn header(mut self, name: HeaderName, value: String) -> Call<'a> {
        self.header = Some((name, value));
        self
    }
}

/// A keep-alive connection that reconnects after any failure.
pub struct Connection {
    target: Target,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(target: Target, timeout: Duration) -> Connection {
        Connection {
            target,
            timeout,
            sender: None,
        }
    }

    /// Another connection to the same target, with the same timeout.
    pub fn fresh(&self) -> Connection {
        Connection::new(self.target.clone(), self.timeout)
    }

    /// Sends one request and reads the whole answer, within the timeout (connecting included).
    pub async fn send(&mut self, call: Call<'_>) -> Result<Reply, Failure> {
        let request = self.build(call);
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(failure)) => {
                self.sender = None;
                Err(failure)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    fn build(&self, call: Call<'_>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(call.method)
            .uri(call.path)
            .header(HOST, self.target.host.clone());
        if let Some(token) = call.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some((name, value)) = call.header {
            builder = builder.header(name, value);
        }
        let body = match call.json {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).expect("a request from valid parts")
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, Failure> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(self.connect().await?),
        };
        sender.ready().await.map_err(Failure::Http)?;
        let response = sender.send_request(request).await.map_err(Failure::Http)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(Failure::Http)?
            .to_bytes();
        Ok(Reply { status, body })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect(&self.target.authority)
            .await
            .map_err(Failure::Connect)?;
        // Requests are small and answered one at a time: Nagle would only add delay.
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Http)?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_to_port_80_and_keep_the_path() {
        let (target, path) = Target::parse("http://127.0.0.1:8888").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8888");
        assert_eq!(path, "/");
        let (target, path) = Target::parse("http://localhost/health?x=1").unwrap();
        assert_eq!(target.authority, "localhost:80");
        assert_eq!(target.host, "localhost");
        assert_eq!(path, "/health?x=1");
        assert!(Target::parse("https://127.0.0.1").is_err());
    }
}
