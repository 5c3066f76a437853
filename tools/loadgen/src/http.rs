//! One keep-alive HTTP/1.1 connection per worker, driven in the worker's own task: no pool,
//! no second task, buffers reused from request to request, so the generator costs the machine
//! as little as possible (it shares the cores with what it measures).

use std::fmt;
use std::io::Write as _;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go: `http://host:port`, plain HTTP only (the load stays on this machine).
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    host: String,
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
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| e.to_string())?
            .to_str()
            .map_err(|e| e.to_string())?
            .to_owned();
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
    /// Writing the request or reading the answer failed.
    Io(std::io::Error),
    /// The answer was not HTTP/1.1 as it should be, or the server closed the connection.
    Protocol(String),
    Timeout,
}

impl Failure {
    /// A short label for the error counts.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Io(_) | Failure::Protocol(_) => "transport",
            Failure::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Io(e) => write!(f, "connection failed: {e}"),
            Failure::Protocol(e) => write!(f, "HTTP error: {e}"),
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

/// A keep-alive connection that reconnects after any failure. It writes each request whole
/// and reads its answer in the worker's own task, parsing the head with `httparse`: one write
/// and (for an answer that fits a buffer) one read per request, like wrk, without the
/// channel to a connection task and the second task's wakeup that hyper's client adds.
pub struct Connection {
    target: Target,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// The request being sent, kept for its capacity.
    request: Vec<u8>,
    /// What was read of the answer, kept for its capacity.
    answer: Vec<u8>,
    /// Whether the request is a HEAD, whose answer has no body whatever its headers say.
    head_only: bool,
    /// When the last exchange ended.
    quiet_since: Instant,
}

/// How long a connection may have been quiet before it is checked for a close by the server.
const QUIET_CHECK: Duration = Duration::from_secs(1);

/// The most header lines an answer may have.
const MAX_HEADERS: usize = 32;

impl Connection {
    pub fn new(target: Target, timeout: Duration) -> Connection {
        Connection {
            target,
            timeout,
            stream: None,
            request: Vec::with_capacity(512),
            answer: Vec::with_capacity(16 * 1024),
            head_only: false,
            quiet_since: Instant::now(),
        }
    }

    /// Another connection to the same target, with the same timeout.
    pub fn fresh(&self) -> Connection {
        Connection::new(self.target.clone(), self.timeout)
    }

    /// Sends one request and reads the whole answer, within the timeout (connecting included).
    pub async fn send(&mut self, call: Call<'_>) -> Result<Reply, Failure> {
        self.build(call);
        let answered = tokio::time::timeout(self.timeout, self.exchange()).await;
        self.quiet_since = Instant::now();
        match answered {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(failure)) => {
                self.stream = None;
                Err(failure)
            }
            Err(_) => {
                self.stream = None;
                Err(Failure::Timeout)
            }
        }
    }

    /// The request's bytes, in `self.request`.
    fn build(&mut self, call: Call<'_>) {
        self.head_only = call.method == Method::HEAD;
        let request = &mut self.request;
        request.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(
            request,
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            call.method, call.path, self.target.host
        );
        if let Some(token) = call.token {
            let _ = write!(request, "authorization: Bearer {token}\r\n");
        }
        if let Some((name, value)) = &call.header {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        match &call.json {
            Some(json) => {
                let _ = write!(
                    request,
                    "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    json.len()
                );
                request.extend_from_slice(json);
            }
            None if call.method == Method::GET || call.method == Method::HEAD => {
                request.extend_from_slice(b"\r\n");
            }
            None => request.extend_from_slice(b"content-length: 0\r\n\r\n"),
        }
    }

    async fn exchange(&mut self) -> Result<Reply, Failure> {
        // A connection quiet for a while may have been closed by the server (its idle
        // timeout, a restart): find out without a system call per request, and reconnect.
        if let Some(stream) = &self.stream
            && self.quiet_since.elapsed() > QUIET_CHECK
        {
            let mut probe = [0; 1];
            match stream.try_read(&mut probe) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => self.stream = None,
            }
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => self.stream.insert(connect(&self.target).await?),
        };
        stream.write_all(&self.request).await.map_err(Failure::Io)?;
        let answer = &mut self.answer;
        answer.clear();
        // The head, read until it parses whole; interim (1xx) answers are skipped.
        let head = loop {
            read_more(stream, answer).await?;
            let parsed = loop {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(answer) {
                    Ok(httparse::Status::Complete(length))
                        if response.code.is_some_and(|code| (100..200).contains(&code)) =>
                    {
                        answer.drain(..length);
                    }
                    Ok(httparse::Status::Complete(length)) => {
                        break Some(Head::of(&response, length, self.head_only)?);
                    }
                    Ok(httparse::Status::Partial) => break None,
                    Err(error) => return Err(Failure::Protocol(error.to_string())),
                }
            };
            if let Some(head) = parsed {
                break head;
            }
        };
        let (body, end) = match head.framing {
            Framing::Length(length) => {
                let end = head.length + length;
                while answer.len() < end {
                    read_more(stream, answer).await?;
                }
                (Bytes::copy_from_slice(&answer[head.length..end]), end)
            }
            Framing::Chunked => read_chunked(stream, answer, head.length).await?,
            Framing::UntilClose => {
                // Only the server's close ends it; a reset cuts it short.
                loop {
                    answer.reserve(16 * 1024);
                    match stream.read_buf(answer).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(error) => return Err(Failure::Io(error)),
                    }
                }
                (Bytes::copy_from_slice(&answer[head.length..]), answer.len())
            }
        };
        if answer.len() > end {
            return Err(Failure::Protocol(
                "the server sent more than its answer".to_owned(),
            ));
        }
        if head.close || head.framing == Framing::UntilClose {
            self.stream = None;
        }
        Ok(Reply {
            status: head.status,
            body,
        })
    }
}

async fn connect(target: &Target) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(Failure::Connect)?;
    // Requests are small and answered one at a time: Nagle would only add delay.
    stream.set_nodelay(true).map_err(Failure::Connect)?;
    Ok(stream)
}

/// Reads what the server sent next onto the end of `answer`; a closed connection is a failure.
async fn read_more(stream: &mut TcpStream, answer: &mut Vec<u8>) -> Result<(), Failure> {
    if answer.capacity() - answer.len() < 4096 {
        answer.reserve(16 * 1024);
    }
    match stream.read_buf(answer).await {
        Ok(0) => Err(Failure::Protocol(
            "the server closed the connection".to_owned(),
        )),
        Ok(_) => Ok(()),
        Err(error) => Err(Failure::Io(error)),
    }
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What the head of an answer says.
struct Head {
    status: StatusCode,
    /// The head's length in bytes: the body starts here.
    length: usize,
    framing: Framing,
    close: bool,
}

impl Head {
    fn of(
        response: &httparse::Response<'_, '_>,
        length: usize,
        head_only: bool,
    ) -> Result<Head, Failure> {
        let status = response
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| Failure::Protocol("an answer without a valid status".to_owned()))?;
        let mut framing = Framing::UntilClose;
        let mut close = false;
        let mut keep_alive = false;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|value| value.trim().parse().ok())
                    .ok_or_else(|| Failure::Protocol("a bad content-length".to_owned()))?;
                if framing != Framing::Chunked {
                    framing = Framing::Length(length);
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                if header.value.eq_ignore_ascii_case(b"chunked") {
                    framing = Framing::Chunked;
                }
            } else if header.name.eq_ignore_ascii_case("connection") {
                let tokens = || header.value.split(|b| *b == b',').map(<[u8]>::trim_ascii);
                close |= tokens().any(|token| token.eq_ignore_ascii_case(b"close"));
                keep_alive |= tokens().any(|token| token.eq_ignore_ascii_case(b"keep-alive"));
            }
        }
        // An HTTP/1.0 server closes the connection unless it says otherwise.
        if response.version == Some(0) && !keep_alive {
            close = true;
        }
        // Answers to HEAD, and 1xx, 204 and 304 answers, have no body whatever their headers
        // say.
        if head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            framing = Framing::Length(0);
        }
        Ok(Head {
            status,
            length,
            framing,
            close,
        })
    }
}

/// The body of a chunked answer whose chunks start at `from` in `answer`, and where it ends
/// (trailers are not expected: one makes the answer look longer than it is, a protocol error).
async fn read_chunked(
    stream: &mut TcpStream,
    answer: &mut Vec<u8>,
    from: usize,
) -> Result<(Bytes, usize), Failure> {
    let mut body = Vec::new();
    let mut at = from;
    loop {
        let (size_line, size) = loop {
            match httparse::parse_chunk_size(&answer[at..]) {
                Ok(httparse::Status::Complete((line, size))) => break (line, size as usize),
                Ok(httparse::Status::Partial) => read_more(stream, answer).await?,
                Err(_) => return Err(Failure::Protocol("a bad chunk size".to_owned())),
            }
        };
        // The chunk and the CRLF after it.
        let end = at + size_line + size + 2;
        while answer.len() < end {
            read_more(stream, answer).await?;
        }
        if &answer[end - 2..end] != b"\r\n" {
            return Err(Failure::Protocol("a chunk without its CRLF".to_owned()));
        }
        if size == 0 {
            return Ok((Bytes::from(body), end));
        }
        body.extend_from_slice(&answer[at + size_line..end - 2]);
        at = end;
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

    /// A server that answers each request on a connection with the next of `answers`, as
    /// written (split in two writes, so answers arrive in pieces), and records the requests.
    async fn canned(answers: Vec<&'static [u8]>) -> (Target, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (target, _) =
            Target::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            let mut answers = answers.into_iter();
            let mut next = answers.next();
            while let Some(first) = next {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut answer = Some(first);
                while let Some(bytes) = answer {
                    let mut request = vec![0; 4096];
                    let read = socket.read(&mut request).await.unwrap();
                    requests.push(String::from_utf8_lossy(&request[..read]).into_owned());
                    let (one, two) = bytes.split_at(bytes.len() / 2);
                    socket.write_all(one).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    socket.write_all(two).await.unwrap();
                    // An answer that ends with the connection closes it; the next one comes
                    // on a new connection.
                    if bytes
                        .windows(17)
                        .any(|w| w.eq_ignore_ascii_case(b"connection: close"))
                    {
                        break;
                    }
                    answer = answers.next();
                }
                next = if answer.is_some() {
                    answers.next()
                } else {
                    None
                };
            }
            requests
        });
        (target, server)
    }

    #[tokio::test]
    async fn answers_framed_by_length_chunks_or_the_end_of_the_connection_are_read_whole() {
        let (target, server) = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"code\":0}\n",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nfound\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nbusy",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let mut connection = Connection::new(target, Duration::from_secs(5));
        let mut replies = Vec::new();
        for call in [
            Call::get("/a"),
            Call::get("/b").token(Some("t0k")),
            Call::with_json(Method::POST, "/c", &serde_json::json!({"x": 1})),
            Call {
                method: Method::HEAD,
                ..Call::get("/h")
            },
            Call::get("/i"),
            Call::get("/d"),
            Call::get("/e"),
        ] {
            let reply = connection.send(call).await.unwrap();
            replies.push((
                reply.status.as_u16(),
                String::from_utf8_lossy(&reply.body).into_owned(),
            ));
        }
        assert_eq!(
            replies,
            [
                (200, "{\"code\":0}\n".to_owned()),
                (404, "not found".to_owned()),
                (204, String::new()),
                (200, String::new()),
                (200, "hi".to_owned()),
                (503, "busy".to_owned()),
                (200, "ok".to_owned()),
            ]
        );
        let requests = server.await.unwrap();
        assert_eq!(requests.len(), 7);
        assert!(requests[1].starts_with("GET /b HTTP/1.1\r\n"));
        assert!(requests[1].contains("\r\nauthorization: Bearer t0k\r\n"));
        assert!(requests[2].starts_with("POST /c HTTP/1.1\r\n"));
        assert!(requests[2].ends_with("content-length: 7\r\n\r\n{\"x\":1}"));
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_mid_answer_is_a_transport_failure_and_the_next_call_reconnects()
    {
        let (target, server) = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\nconnection: close\r\n\r\ncut short",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let mut connection = Connection::new(target, Duration::from_secs(5));
        let failure = connection.send(Call::get("/")).await.unwrap_err();
        assert_eq!(failure.label(), "transport", "{failure}");
        let reply = connection.send(Call::get("/")).await.unwrap();
        assert_eq!(&reply.body[..], b"ok");
        assert_eq!(server.await.unwrap().len(), 2);
    }

    /// A server that closed a kept connection while it was quiet (its idle timeout) costs the
    /// next request nothing: the connection is found closed and opened again.
    #[tokio::test]
    async fn a_connection_the_server_closed_while_quiet_is_opened_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (target, _) =
            Target::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 4096];
                let _ = socket.read(&mut request).await.unwrap();
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                // Closed without saying so, as an idle timeout does.
            }
        });
        let mut connection = Connection::new(target, Duration::from_secs(5));
        assert_eq!(
            &connection.send(Call::get("/")).await.unwrap().body[..],
            b"ok"
        );
        tokio::time::sleep(QUIET_CHECK + Duration::from_millis(200)).await;
        assert_eq!(
            &connection.send(Call::get("/")).await.unwrap().body[..],
            b"ok"
        );
        server.await.unwrap();
    }
}
