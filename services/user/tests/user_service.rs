//! The user service over real gRPC, on a real PostgreSQL database of its own per test.
//!
//! Needs PostgreSQL (DATABASE_URL_BASE or postgres://postgres@127.0.0.1:5432/postgres) and a
//! Kafka-protocol broker (KAFKA_BROKERS); `make test` starts both.

use std::time::Duration;

use clap::Parser;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::proto::user::v1::user_service_client::UserServiceClient;
use letsgo_platform::proto::user::v1::{
    GetProfileRequest, LoginRequest, RegisterRequest, UpdateProfileRequest,
};
use letsgo_platform::shutdown::Shutdown;
use letsgo_testkit::start_on_free_ports;
use letsgo_testkit::{ScratchDatabase, TopicPrefix, postgres_url};
use letsgo_user::{Config, run};
use tonic::transport::Channel;

const SECRET: &str = "test-secret-0123456789abcdef0123456789";

struct RunningService {
    client: UserServiceClient<Channel>,
    grpc_addr: std::net::SocketAddr,
    database: ScratchDatabase,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), letsgo_platform::assembly::ServiceError>>,
    /// The topics its outbox relay made, deleted when it goes.
    _topics: TopicPrefix,
}

impl RunningService {
    /// A service on a database of its own; `admin_password` is ADMIN_PASSWORD ("" leaves it
    /// unset).
    async fn start(admin_password: &str) -> RunningService {
        let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
        RunningService::start_on(database, admin_password).await
    }

    async fn start_on(database: ScratchDatabase, admin_password: &str) -> RunningService {
        RunningService::start_with(database, admin_password, &[]).await
    }

    async fn start_with(
        database: ScratchDatabase,
        admin_password: &str,
        extra: &[&str],
    ) -> RunningService {
        let mut args = service_args(&database, admin_password);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let config = Config::try_parse_from(args).unwrap();
        let shutdown = Shutdown::new();
        let (grpc_addr, task) = start_on_free_ports(
            |listeners, shutdown| run(config, listeners, shutdown),
            &shutdown,
        )
        .await;
        let client = connect(grpc_addr).await;
        RunningService {
            client,
            grpc_addr,
            _topics: TopicPrefix::exactly(format!("test-{}.", database.name())),
            database,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> ScratchDatabase {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("service stops within 10 s of shutdown")
            .unwrap()
            .unwrap();
        self.database
    }
}

fn service_args(database: &ScratchDatabase, admin_password: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "letsgo-user",
        "--database-url",
        &database.url,
        "--jwt-secret",
        SECRET,
        "--kafka-topic-prefix",
        &format!("test-{}.", database.name()),
        "--log-format",
        "text",
        "--discovery",
        "static",
    ]
    .map(str::to_owned)
    .into();
    if !admin_password.is_empty() {
        args.extend(["--admin-password".to_owned(), admin_password.to_owned()]);
    }
    args
}

async fn connect(addr: std::net::SocketAddr) -> UserServiceClient<Channel> {
    for _ in 0..100 {
        if let Ok(client) = UserServiceClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("user service did not come up on {addr}");
}

fn registration(username: &str, email: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.to_owned(),
        password: "password123".to_owned(),
        email: email.to_owned(),
        phone: "13800138000".to_owned(),
    }
}

fn code_of(status: tonic::Status) -> ErrorCode {
    AppError::from(status).code
}

fn keys() -> letsgo_platform::auth::TokenKeys {
    letsgo_platform::auth::TokenKeys::new(
        SECRET.as_bytes(),
        "letsgo",
        "letsgo-api",
        Duration::from_secs(60),
    )
}

#[tokio::test]
async fn registered_user_signs_in_and_reads_their_profile() {
    let mut service = RunningService::start("").await;
    let registered = service
        .client
        .register(registration("john", "john@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert!(registered.user_id > 0);
    assert_eq!(
        keys().verify(&registered.token).unwrap().user_id,
        registered.user_id
    );

    let signed_in = service
        .client
        .login(LoginRequest {
            username: "john".into(),
            password: "password123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed_in.user_id, registered.user_id);
    assert_eq!(signed_in.role, "user");

    let profile = service
        .client
        .get_profile(GetProfileRequest {
            user_id: registered.user_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(profile.username, "john");
    assert_eq!(profile.email, "john@example.com");
    assert_eq!(profile.phone, "13800138000");
    assert!(profile.created_at > 0);
    service.stop().await;
}

#[tokio::test]
async fn a_taken_username_or_email_is_2001_whatever_its_case() {
    let mut service = RunningService::start("").await;
    service
        .client
        .register(registration("alice", "alice@example.com"))
        .await
        .unwrap();
    for (username, email) in [
        ("alice", "other@example.com"),
        ("ALICE", "other@example.com"),
        ("alice2", "Alice@Example.com"),
    ] {
        let status = service
            .client
            .register(registration(username, email))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(code_of(status), ErrorCode::UserExists, "{username} {email}");
    }
    service.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_the_same_2002() {
    let mut service = RunningService::start("").await;
    service
        .client
        .register(registration("bob", "bob@example.com"))
        .await
        .unwrap();
    for (username, password) in [("bob", "wrong-password"), ("nobody", "password123")] {
        let status = service
            .client
            .login(LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.message(), "wrong username or password");
        assert_eq!(code_of(status), ErrorCode::WrongPassword);
    }
    service.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_1001_and_create_nothing() {
    let mut service = RunningService::start("").await;
    let cases = [
        ("ab", "password123", "a@example.com", ""),
        ("toolongusername_12345", "password123", "a@example.com", ""),
        ("bad name", "password123", "a@example.com", ""),
        ("carol", "12345", "a@example.com", ""),
        ("carol", "password123", "not-an-email", ""),
        ("carol", "password123", "a@example.com", "12345"),
        ("carol", "password123", "a@example.com", "1380013800a"),
    ];
    for (username, password, email, phone) in cases {
        let status = service
            .client
            .register(RegisterRequest {
                username: username.into(),
                password: password.into(),
                email: email.into(),
                phone: phone.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            code_of(status),
            ErrorCode::InvalidParams,
            "{username} {password} {email} {phone}"
        );
    }
    let pool = sqlx::PgPool::connect(&service.database.url).await.unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
    pool.close().await;
    service.stop().await;
}

#[tokio::test]
async fn profile_update_changes_only_given_fields_and_guards_email() {
    let mut service = RunningService::start("").await;
    let dave = service
        .client
        .register(registration("dave", "dave@example.com"))
        .await
        .unwrap()
        .into_inner();
    service
        .client
        .register(registration("erin", "erin@example.com"))
        .await
        .unwrap();
    service
        .client
        .update_profile(UpdateProfileRequest {
            user_id: dave.user_id,
            avatar: Some("https://img.example.com/dave.png".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let profile = service
        .client
        .get_profile(GetProfileRequest {
            user_id: dave.user_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(profile.avatar, "https://img.example.com/dave.png");
    assert_eq!(profile.email, "dave@example.com");
    assert_eq!(profile.phone, "13800138000");

    let taken = service
        .client
        .update_profile(UpdateProfileRequest {
            user_id: dave.user_id,
            email: Some("erin@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(taken), ErrorCode::UserExists);
    let bad_phone = service
        .client
        .update_profile(UpdateProfileRequest {
            user_id: dave.user_id,
            phone: Some("123".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(bad_phone), ErrorCode::InvalidParams);
    let missing = service
        .client
        .get_profile(GetProfileRequest { user_id: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(code_of(missing), ErrorCode::UserNotFound);
    service.stop().await;
}

const ADMIN_PASSWORD: &str = "initial-admin-pass-1";

fn login_request(username: &str, password: &str) -> LoginRequest {
    LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

#[tokio::test]
async fn the_initial_admin_is_made_once_and_its_password_never_changed() {
    let mut service = RunningService::start(ADMIN_PASSWORD).await;
    let admin = service
        .client
        .login(login_request("admin", ADMIN_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admin.role, "admin");
    assert!(keys().verify(&admin.token).unwrap().is_admin());
    let database = service.stop().await;

    // A restart with another password (a regenerated secret, say) leaves the account alone.
    let mut service = RunningService::start_on(database, "another-password-22").await;
    let again = service
        .client
        .login(login_request("admin", ADMIN_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.user_id, admin.user_id);
    let refused = service
        .client
        .login(login_request("admin", "another-password-22"))
        .await
        .unwrap_err();
    assert_eq!(code_of(refused), ErrorCode::WrongPassword);
    service.stop().await;
}

#[tokio::test]
async fn nobody_registers_the_admins_name_even_before_the_account_exists() {
    for password in [ADMIN_PASSWORD, ""] {
        let mut service = RunningService::start(password).await;
        for name in ["admin", "ADMIN", " Admin "] {
            let taken = service
                .client
                .register(registration(name, "stranger@example.com"))
                .await
                .unwrap_err();
            assert_eq!(code_of(taken), ErrorCode::UserExists, "{name:?}");
        }
        // Without ADMIN_PASSWORD no account is made at all, so no password can open it.
        if password.is_empty() {
            let refused = service
                .client
                .login(login_request("admin", ADMIN_PASSWORD))
                .await
                .unwrap_err();
            assert_eq!(code_of(refused), ErrorCode::WrongPassword);
        }
        service.stop().await;
    }
}

#[tokio::test]
async fn a_stranger_who_took_the_admins_name_earlier_is_not_promoted() {
    // An older release let anyone register "admin"; this one starts on that database.
    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    {
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        sqlx::migrate!("./migrations").run(&pool).await.unwrap();
        let stranger = letsgo_user::passwords::hash("strangers-own-pass".into())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO users (username, email, password_hash, role) \
             VALUES ('admin', 'stranger@example.com', $1, 'user')",
        )
        .bind(stranger)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let mut service = RunningService::start_on(database, ADMIN_PASSWORD).await;
    let refused = service
        .client
        .login(login_request("admin", ADMIN_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(code_of(refused), ErrorCode::WrongPassword);
    let pool = sqlx::PgPool::connect(&service.database.url).await.unwrap();
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE username = 'admin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(role, "user");
    pool.close().await;
    service.stop().await;
}

#[tokio::test]
async fn a_short_admin_password_is_refused_at_start_by_name() {
    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    let config = Config::try_parse_from(service_args(&database, "short-pw")).unwrap();
    let listeners = letsgo_platform::grpc::Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let error = run(config, listeners, Shutdown::new()).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("ADMIN_PASSWORD"), "{message}");
    assert!(!message.contains("short-pw"), "{message}");
}

/// Runs the real binary's command line, as `kubectl exec deploy/<store>-user -- letsgo-user
/// grant-admin NAME` does; answers (succeeded, what it printed).
fn command_line(database: &ScratchDatabase, words: &[&str]) -> (bool, String) {
    command_line_with_input(database, words, "")
}

fn command_line_with_input(
    database: &ScratchDatabase,
    words: &[&str],
    input: &str,
) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_letsgo-user"))
        .args(words)
        .env("DATABASE_URL", &database.url)
        .env("JWT_SECRET", SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    // The answer is on stdout; a refusal, and any warning, on stderr.
    let printed = if output.status.success() {
        &output.stdout
    } else {
        &output.stderr
    };
    (
        output.status.success(),
        String::from_utf8_lossy(printed).into_owned(),
    )
}

#[tokio::test]
async fn admins_are_granted_and_revoked_from_the_command_line_never_the_last() {
    let mut service = RunningService::start(ADMIN_PASSWORD).await;
    let frank = service
        .client
        .register(registration("frank", "frank@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(frank.role, "user");
    let database = &service.database;

    let (ok, printed) = command_line(database, &["grant-admin", "Frank"]);
    assert!(ok, "{printed}");
    assert!(printed.contains("frank is an admin"), "{printed}");
    let frank_again = service
        .client
        .login(login_request("frank", "password123"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(frank_again.role, "admin");
    let (ok, printed) = command_line(database, &["list-admins"]);
    assert!(ok, "{printed}");
    assert_eq!(printed.trim(), "admin\nfrank");

    let (ok, printed) = command_line(database, &["grant-admin", "nobody"]);
    assert!(
        !ok && printed.contains("no account is named nobody"),
        "{printed}"
    );

    let (ok, printed) = command_line(database, &["revoke-admin", "admin"]);
    assert!(ok, "{printed}");
    let profile = service
        .client
        .get_profile(GetProfileRequest {
            user_id: frank.user_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(profile.role, "admin");
    // frank is now the only admin: he stays one.
    let (ok, printed) = command_line(database, &["revoke-admin", "frank"]);
    assert!(!ok && printed.contains("last admin"), "{printed}");
    let (ok, printed) = command_line(database, &["list-admins"]);
    assert!(ok && printed.trim() == "frank", "{printed}");

    // A lost password is replaced from stdin; an admin's needs the admin minimum.
    let (ok, printed) =
        command_line_with_input(database, &["set-password", "frank"], "short-pass\n");
    assert!(!ok && printed.contains("at least 12"), "{printed}");
    let (ok, printed) =
        command_line_with_input(database, &["set-password", "frank"], "frank-new-password\n");
    assert!(ok, "{printed}");
    let refused = service
        .client
        .login(login_request("frank", "password123"))
        .await
        .unwrap_err();
    assert_eq!(code_of(refused), ErrorCode::WrongPassword);
    service
        .client
        .login(login_request("frank", "frank-new-password"))
        .await
        .unwrap();
    service.stop().await;
}

#[tokio::test]
async fn two_revocations_at_once_leave_an_admin() {
    let service = RunningService::start(ADMIN_PASSWORD).await;
    let mut client = service.client.clone();
    client
        .register(registration("frank", "frank@example.com"))
        .await
        .unwrap();
    let database = &service.database;
    assert!(command_line(database, &["grant-admin", "frank"]).0);
    let revocations = ["admin", "frank"].map(|name| {
        let url = database.url.clone();
        std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_letsgo-user"))
                .args(["revoke-admin", name])
                .env("DATABASE_URL", url)
                .env("JWT_SECRET", SECRET)
                .output()
                .unwrap()
                .status
                .success()
        })
    });
    let succeeded = revocations
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(succeeded, 1);
    let (_, printed) = command_line(database, &["list-admins"]);
    assert_eq!(printed.trim().lines().count(), 1, "{printed}");
    service.stop().await;
}

#[tokio::test]
async fn of_concurrent_registrations_of_one_name_exactly_one_wins() {
    let service = RunningService::start("").await;
    let attempts = (0..8).map(|i| {
        let mut client = service.client.clone();
        async move {
            client
                .register(registration("grace", &format!("grace{i}@example.com")))
                .await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let winners = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(winners, 1);
    for result in results.into_iter().filter_map(Result::err) {
        assert_eq!(code_of(result), ErrorCode::UserExists);
    }
    service.stop().await;
}

#[tokio::test]
async fn registration_writes_its_event_to_the_outbox_in_the_same_transaction() {
    let mut service = RunningService::start("").await;
    let heidi = service
        .client
        .register(registration("heidi", "heidi@example.com"))
        .await
        .unwrap()
        .into_inner();
    let pool = sqlx::PgPool::connect(&service.database.url).await.unwrap();
    let (topic, payload): (String, serde_json::Value) =
        sqlx::query_as("SELECT topic, payload FROM event_outbox WHERE event_key = $1")
            .bind(heidi.user_id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(topic, "user.registered");
    assert_eq!(payload["type"], "user.registered");
    assert_eq!(payload["data"]["userId"], heidi.user_id);
    assert!(payload["id"].is_string());
    pool.close().await;
    service.stop().await;
}

#[tokio::test]
async fn health_reports_serving_and_reflection_lists_the_service() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    let service = RunningService::start_with(database, "", &["--grpc-reflection", "true"]).await;
    let url = format!("http://{}", service.grpc_addr);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let reply = health
        .check(HealthCheckRequest {
            service: "letsgo.user.v1.UserService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The server describes itself alone: a grpcurl at the user service's port sees no
    // OrderService it would get UNIMPLEMENTED from.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures_util::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("reflection did not list services");
    };
    let mut names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "letsgo.user.v1.UserService"
        ],
        "{names:?}"
    );

    // The older protocol (grpcurl before 1.9, Postman) gets the same answer.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(futures_util::stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("v1alpha reflection did not list services");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
                "letsgo.user.v1.UserService"
            ]
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn migrations_run_safely_when_replicas_start_at_once() {
    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    let runs = (0..4).map(|_| {
        let url = database.url.clone();
        async move {
            let pool = letsgo_platform::db::connect(&url, 2).await?;
            let result = letsgo_platform::db::migrate(&pool, sqlx::migrate!("./migrations")).await;
            pool.close().await;
            result.map_err(|error| sqlx::Error::Protocol(error.to_string()))
        }
    });
    for result in futures_util::future::join_all(runs).await {
        result.unwrap();
    }
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    let expected = letsgo_platform::db::platform_migrator().iter().count()
        + sqlx::migrate!("./migrations").iter().count();
    assert_eq!(
        applied, expected as i64,
        "every migration of the platform (outbox, dead letters, ...) and of users applied once"
    );
    pool.close().await;
}

/// With the shop's internal token set, a caller without it (a Pod that is not part of the
/// shop) is refused; health stays open, and reflection is off unless asked for.
#[tokio::test]
async fn without_the_internal_token_a_call_is_unauthenticated() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    const TOKEN: &str = "internal-token-0123456789abcdef0123";
    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    let mut service = RunningService::start_with(database, "", &["--internal-token", TOKEN]).await;
    let refused = service
        .client
        .register(registration("mallory", "mallory@example.com"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(registration("mallory", "mallory@example.com"));
    wrong.metadata_mut().insert(
        letsgo_platform::internal_auth::TOKEN_HEADER,
        "internal-token-0123456789abcdef0124".parse().unwrap(),
    );
    assert_eq!(
        service.client.register(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(registration("alice", "alice@example.com"));
    right.metadata_mut().insert(
        letsgo_platform::internal_auth::TOKEN_HEADER,
        TOKEN.parse().unwrap(),
    );
    service.client.register(right).await.unwrap();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", service.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut ask = tonic::Request::new(futures_util::stream::iter(vec![
        tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        },
    ]));
    ask.metadata_mut().insert(
        letsgo_platform::internal_auth::TOKEN_HEADER,
        TOKEN.parse().unwrap(),
    );
    let listed = reflection.server_reflection_info(ask).await.unwrap_err();
    assert_eq!(
        listed.code(),
        tonic::Code::Unimplemented,
        "reflection is off unless asked for"
    );
    service.stop().await;
}
