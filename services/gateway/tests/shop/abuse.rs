//! Slow and abusive clients: timeouts, the connection cap, clients behind proxies and
//! sign-in throttling.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Longest any test here waits for the gateway to close a connection: far beyond the short
/// deadlines the tests set, and far short of forever, which is what a held socket would take.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

/// A gateway without services: /health is all these connection tests need.
async fn bare_gateway(gateway_args: &[(&str, &str)]) -> Shop {
    Shop::start_with(ShopOptions {
        with_user_service: false,
        gateway_args: flags(gateway_args),
        ..Default::default()
    })
    .await
}

async fn connect(shop: &Shop) -> TcpStream {
    TcpStream::connect(shop.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n";

/// Reads one answer off a raw connection: its status and body, or None if the connection
/// closed first.
async fn read_answer(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            while received.len() < end + 4 + length {
                let read = stream.read(&mut chunk).await.ok()?;
                if read == 0 {
                    return None;
                }
                received.extend_from_slice(&chunk[..read]);
            }
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
            return Some((status, body.into_owned()));
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&chunk[..read]);
    }
}

/// Whether the gateway closes the connection within [`CLOSE_WITHIN`] (anything it says before,
/// such as a 408, is read and passed over).
async fn closed_by_gateway(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    let until_closed = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CLOSE_WITHIN, until_closed)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_client_that_stalls_in_its_first_request_head_is_answered_408_and_dropped() {
    let shop = bare_gateway(&[("--header-read-timeout-ms", "300")]).await;
    let mut stalled = connect(&shop).await;
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .unwrap();
    let answer = tokio::time::timeout(CLOSE_WITHIN, read_answer(&mut stalled))
        .await
        .expect("a half-sent head holds its socket");
    assert_eq!(answer, Some((408, String::new())));
    assert!(closed_by_gateway(&mut stalled).await);
    // So is a connection that never says anything.
    let mut silent = connect(&shop).await;
    let answer = tokio::time::timeout(CLOSE_WITHIN, read_answer(&mut silent))
        .await
        .expect("a silent connection is held");
    assert_eq!(answer, Some((408, String::new())));
    assert!(closed_by_gateway(&mut silent).await);
}

#[tokio::test]
async fn a_late_head_on_a_kept_alive_connection_is_dropped() {
    let shop = bare_gateway(&[
        ("--header-read-timeout-ms", "300"),
        ("--idle-timeout-ms", "60000"),
    ])
    .await;
    let mut stream = connect(&shop).await;
    stream.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.map(|(s, _)| s), Some(200));
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gat")
        .await
        .unwrap();
    assert!(
        closed_by_gateway(&mut stream).await,
        "a half-sent second head holds its socket until the idle timeout or longer"
    );
}

#[tokio::test]
async fn a_head_dribbled_a_byte_at_a_time_is_cut_off_while_others_are_served() {
    let shop = bare_gateway(&[("--header-read-timeout-ms", "500")]).await;
    // A slowloris: many connections, each sending one more header byte every 100 ms, which
    // would keep a per-read timeout from ever firing.
    let mut readers = Vec::new();
    for _ in 0..40 {
        let (mut reader, mut writer) = connect(&shop).await.into_split();
        tokio::spawn(async move {
            let head = b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Padding: ";
            if writer.write_all(head).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
        readers.push(tokio::spawn(async move {
            let mut chunk = [0u8; 1024];
            tokio::time::timeout(CLOSE_WITHIN, async {
                loop {
                    match reader.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .is_ok()
        }));
    }
    // Meanwhile an ordinary client is answered.
    let (status, body) = shop.get_with_token("/health", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for reader in readers {
        assert!(
            reader.await.unwrap(),
            "a dribbling client kept its connection"
        );
    }
}

#[tokio::test]
async fn an_idle_connection_outlives_the_header_deadline_and_closes_at_the_idle_one() {
    let shop = bare_gateway(&[
        ("--header-read-timeout-ms", "200"),
        ("--idle-timeout-ms", "3000"),
    ])
    .await;
    let mut stream = connect(&shop).await;
    stream.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.map(|(s, _)| s), Some(200));
    // Well past the header deadline, well within the idle one: the connection still serves.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stream.write_all(HEALTH).await.unwrap();
    assert_eq!(
        read_answer(&mut stream).await.map(|(s, _)| s),
        Some(200),
        "an idle keep-alive connection was closed at the header deadline"
    );
    assert!(
        closed_by_gateway(&mut stream).await,
        "an idle keep-alive connection is held"
    );
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_is_answered_503_and_closed() {
    let shop = bare_gateway(&[
        ("--max-connections", "2"),
        ("--header-read-timeout-ms", "30000"),
    ])
    .await;
    // Two keep-alive connections, answered once so they are surely accepted, then held.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&shop).await;
        stream.write_all(HEALTH).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.map(|(s, _)| s), Some(200));
        held.push(stream);
    }
    let mut third = connect(&shop).await;
    third.write_all(HEALTH).await.unwrap();
    let (status, body) = read_answer(&mut third)
        .await
        .expect("an answer, not a hang");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        1004,
    );
    assert!(
        closed_by_gateway(&mut third).await,
        "the refused connection is closed"
    );
    // A place frees up when a held connection goes.
    drop(held.pop());
    let mut answered = None;
    for _ in 0..50 {
        let mut stream = connect(&shop).await;
        stream.write_all(HEALTH).await.unwrap();
        answered = read_answer(&mut stream).await.map(|(s, _)| s);
        if answered == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answered,
        Some(200),
        "the freed place is given to a new connection"
    );
}

/// Whether the gateway refuses new connections within `patience` (tried every 20 ms).
async fn refused_within(shop: &Shop, patience: Duration) -> bool {
    let deadline = std::time::Instant::now() + patience;
    while std::time::Instant::now() < deadline {
        if TcpStream::connect(shop.base.trim_start_matches("http://"))
            .await
            .is_err()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_drain_finishes_the_request_in_flight_closes_idle_connections_and_accepts_no_more() {
    // A "user service" that accepts and never answers: a sign-in hangs until its deadline.
    let (address, holder) = blackhole().await;
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        services_at: Some(address),
        gateway_args: flags(&[
            ("--request-timeout-ms", "1500"),
            ("--shutdown-linger-ms", "0"),
        ]),
        ..Default::default()
    })
    .await;
    let mut idle = connect(&shop).await;
    idle.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.map(|(s, _)| s), Some(200));
    let mut busy = connect(&shop).await;
    let body = json!({"username": "ann", "password": "secret1"}).to_string();
    let request = format!(
        "POST /api/v1/user/login HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    busy.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    shop.kit.shutdown().trigger();
    assert!(
        closed_by_gateway(&mut idle).await,
        "an idle connection outlives the drain"
    );
    let (status, answer) = read_answer(&mut busy)
        .await
        .expect("the request in flight is answered, not cut off");
    assert_eq!(status, 503, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["code"], 1004, "{answer}");
    assert!(
        refused_within(&shop, Duration::from_secs(1)).await,
        "new connections are still accepted after the drain began"
    );
    holder.abort();
}

#[tokio::test]
async fn after_sigterm_the_gateway_lingers_answering_with_connection_close_then_accepts_no_more() {
    let linger = Duration::from_secs(4);
    let shop = bare_gateway(&[("--shutdown-linger-ms", "4000")]).await;
    let mut kept = connect(&shop).await;
    kept.write_all(HEALTH).await.unwrap();
    let before = read_answer(&mut kept).await;
    assert_eq!(before.map(|(status, _)| status), Some(200));

    let triggered = std::time::Instant::now();
    shop.kit.shutdown().trigger();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A keep-alive client's next request is answered, and the answer ends the connection:
    // the client learns it from the answer instead of from a reset under its next request.
    kept.write_all(HEALTH).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(CLOSE_WITHIN, kept.read_to_end(&mut received))
        .await
        .expect("the connection is closed after its answer")
        .expect("closed cleanly, not reset");
    let answer = String::from_utf8_lossy(&received).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // A client that connects while the gateway lingers is answered too, and told to close.
    let mut late = connect(&shop).await;
    late.write_all(HEALTH).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(CLOSE_WITHIN, late.read_to_end(&mut received))
        .await
        .expect("the late connection is closed after its answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&received).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        triggered.elapsed() < linger,
        "the checks above ran within the linger; raise it if this machine is that slow"
    );
    // After the linger: nothing is accepted.
    assert!(
        refused_within(&shop, linger + CLOSE_WITHIN).await,
        "connections are still accepted after the linger"
    );
    assert!(
        triggered.elapsed() >= linger,
        "the gateway stopped accepting before its linger was over"
    );
}

/// Sends GET /health as the given X-Forwarded-For (`None`: the header is left out) until one
/// is refused 429, and says how many were answered before it (at most `limit`).
async fn answered_until_limited(
    shop: &Shop,
    forwarded_for: &[Option<&str>],
    limit: usize,
) -> usize {
    for (sent, from) in forwarded_for.iter().cycle().take(limit).enumerate() {
        let mut request = shop.http.get(format!("{}/health", shop.base));
        if let Some(from) = from {
            request = request.header("X-Forwarded-For", *from);
        }
        let status = request.send().await.unwrap().status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return sent;
        }
        assert_eq!(status, StatusCode::OK);
    }
    limit
}

/// Burst 5 at 1 a second: clients sharing a budget are answered about 5 times together before
/// a 429 (6 if a token came back meanwhile); clients with a budget each, 5 times each.
async fn rate_limited_gateway(trusted_proxies: Option<&str>) -> Shop {
    let mut gateway_args = Vec::new();
    if let Some(trusted) = trusted_proxies {
        gateway_args = flags(&[("--trusted-proxies", trusted)]);
    }
    Shop::start_with(ShopOptions {
        with_user_service: false,
        rate_per_second: 1,
        burst: 5,
        gateway_args,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_a_budget_of_its_own() {
    let shop = rate_limited_gateway(Some("127.0.0.1/32")).await;
    let first = answered_until_limited(&shop, &[Some("198.51.100.1")], 20).await;
    assert!((5..20).contains(&first), "{first}");
    // Another client of the proxy, and the proxy itself, still have their budgets.
    for from in [Some("198.51.100.2"), Some("192.0.2.1, 198.51.100.3"), None] {
        let answered = answered_until_limited(&shop, &[from], 3).await;
        assert_eq!(answered, 3, "{from:?} was limited with 198.51.100.1");
    }
    // What a client writes left of the address the proxy saw does not buy it a new budget.
    let spoofing = answered_until_limited(
        &shop,
        &[
            Some("203.0.113.1, 198.51.100.4"),
            Some("203.0.113.2, 198.51.100.4"),
            Some("203.0.113.3, 198.51.100.4"),
        ],
        20,
    )
    .await;
    assert!(spoofing <= 7, "{spoofing} answers for one client");
}

#[tokio::test]
async fn clients_in_one_ipv6_slash_64_share_a_budget() {
    let shop = rate_limited_gateway(Some("127.0.0.1/32")).await;
    let one_network = answered_until_limited(
        &shop,
        &[Some("2001:db8:1:2::1"), Some("2001:db8:1:2:ffff::9")],
        20,
    )
    .await;
    assert!(one_network <= 7, "{one_network} answers for one /64");
    // The next /64 is someone else.
    assert_eq!(
        answered_until_limited(&shop, &[Some("2001:db8:1:3::1")], 3).await,
        3
    );
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    // The gateway trusts no proxy: the test's own address is the client, whatever it claims.
    let shop = rate_limited_gateway(None).await;
    let claimed = answered_until_limited(
        &shop,
        &[
            Some("198.51.100.1"),
            Some("198.51.100.2"),
            Some("garbage, ::1"),
        ],
        20,
    )
    .await;
    assert!(claimed <= 7, "{claimed} answers for one peer");
}

/// A gateway behind a "proxy" at 127.0.0.1 (the tests), with the user service and the given
/// sign-in budgets.
async fn shop_with_sign_in_budgets(budgets: &[(&str, &str)]) -> Shop {
    let mut gateway_args = flags(&[("--trusted-proxies", "127.0.0.1/32")]);
    gateway_args.extend(flags(budgets));
    Shop::start_with(ShopOptions {
        gateway_args,
        ..Default::default()
    })
    .await
}

struct SignIn {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

async fn sign_in(shop: &Shop, username: &str, password: &str, from: &str) -> SignIn {
    let response = shop
        .http
        .post(format!("{}/api/v1/user/login", shop.base))
        .header("X-Forwarded-For", from)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap();
    SignIn {
        status,
        body,
        retry_after,
    }
}

fn assert_throttled(answer: &SignIn, longest_wait: u64) {
    assert_error(
        answer.status,
        &answer.body,
        StatusCode::TOO_MANY_REQUESTS,
        1006,
    );
    let wait = answer.retry_after.expect("a 429 says when to retry");
    assert!((1..=longest_wait).contains(&wait), "Retry-After {wait}");
}

#[tokio::test]
async fn an_account_with_too_many_failed_sign_ins_is_throttled_from_every_address() {
    // Three failures per 600 s: one forgiven every 200 s.
    let shop = shop_with_sign_in_budgets(&[
        ("--login-failures-per-account", "3"),
        ("--login-failure-window-secs", "600"),
    ])
    .await;
    shop.register("victim").await;
    shop.register("bystander").await;
    for from in ["198.51.100.1", "198.51.100.2", "2001:db8::1"] {
        let answer = sign_in(&shop, "victim", "guess-123", from).await;
        assert_error(answer.status, &answer.body, StatusCode::UNAUTHORIZED, 2002);
    }
    // Any spelling of the name, from yet another address.
    let answer = sign_in(&shop, " Victim ", "guess-456", "198.51.100.4").await;
    assert_throttled(&answer, 200);
    let answer = sign_in(&shop, "victim", "password123", "198.51.100.5").await;
    assert_throttled(&answer, 200);
    // Other accounts, from the same addresses, are not affected.
    let answer = sign_in(&shop, "bystander", "password123", "198.51.100.1").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn an_address_with_too_many_failed_sign_ins_is_throttled_across_usernames() {
    let shop = shop_with_sign_in_budgets(&[
        ("--login-failures-per-address", "4"),
        ("--login-failure-window-secs", "600"),
    ])
    .await;
    shop.register("walker").await;
    for name in ["anna", "ben", "cleo", "dan"] {
        let answer = sign_in(&shop, name, "guess-123", "198.51.100.9").await;
        assert_error(answer.status, &answer.body, StatusCode::UNAUTHORIZED, 2002);
    }
    assert_throttled(
        &sign_in(&shop, "eve", "guess-123", "198.51.100.9").await,
        150,
    );
    assert_throttled(
        &sign_in(&shop, "walker", "password123", "198.51.100.9").await,
        150,
    );
    let answer = sign_in(&shop, "walker", "password123", "198.51.100.10").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = sign_in(&shop, "eve", "guess-123", "198.51.100.10").await;
    assert_error(answer.status, &answer.body, StatusCode::UNAUTHORIZED, 2002);
    // Every address of an IPv6 /64 counts as one.
    for host in 1..=4 {
        let from = format!("2001:db8:5:5::{host}");
        let answer = sign_in(&shop, &format!("user{host}"), "guess-123", &from).await;
        assert_error(answer.status, &answer.body, StatusCode::UNAUTHORIZED, 2002);
    }
    assert_throttled(
        &sign_in(&shop, "walker", "password123", "2001:db8:5:5:abcd::1").await,
        150,
    );
}

#[tokio::test]
async fn a_throttled_account_is_refused_even_the_right_password_until_its_budget_recovers() {
    // Two failures per 10 s: one forgiven every 5 s.
    let shop = shop_with_sign_in_budgets(&[
        ("--login-failures-per-account", "2"),
        ("--login-failure-window-secs", "10"),
    ])
    .await;
    shop.register("ida").await;
    // Successes cost nothing.
    for _ in 0..3 {
        let answer = sign_in(&shop, "ida", "password123", "198.51.100.1").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    for _ in 0..2 {
        let answer = sign_in(&shop, "ida", "guess-123", "198.51.100.1").await;
        assert_error(answer.status, &answer.body, StatusCode::UNAUTHORIZED, 2002);
    }
    let answer = sign_in(&shop, "ida", "password123", "198.51.100.2").await;
    assert_throttled(&answer, 5);
    tokio::time::sleep(Duration::from_secs(answer.retry_after.unwrap())).await;
    let answer = sign_in(&shop, "ida", "password123", "198.51.100.2").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

/// A request head far past any real client's is refused (431), so open connections cannot
/// each hold hundreds of KiB of buffered headers.
#[tokio::test]
async fn an_oversized_request_head_is_431() {
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        ..ShopOptions::default()
    })
    .await;
    let address = shop.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 100 * 1024));
    head.extend(b"\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The server may answer and close before the whole head is written.
    let _ = stream.write_all(&head).await;
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer, not a hang")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    // An ordinary request is fine.
    let (status, _) = shop.get_with_token("/health", None).await;
    assert_eq!(status, StatusCode::OK);
}
