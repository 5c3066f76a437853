//! Settings shared by several binaries, read from the environment (the original's names) or
//! from flags. Each binary flattens the groups it needs into its own `Config`.
//!
//! A missing or malformed setting stops the process before it starts serving, with clap's
//! message naming the variable (`JWT_SECRET`, `DB_PORT`, ...).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// Parses a duration written as whole milliseconds.
pub fn parse_millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected whole milliseconds, got {text:?}"))
}

/// The outbox relay's gather pause: whole milliseconds, at most 1,000 (every event written
/// while others are may wait that long).
fn parse_gather(text: &str) -> Result<Duration, String> {
    let gather = parse_millis(text)?;
    if gather > Duration::from_secs(1) {
        return Err(format!(
            "at most 1000 ms (events written while others are wait this long), got {text}"
        ));
    }
    Ok(gather)
}

/// Parses a duration written as whole seconds.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("expected whole seconds, got {text:?}"))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines (for a terminal).
    Text,
}

/// PostgreSQL's `sslmode`, as libpq names its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Each setting's values print as they are written in the setting (`verify-ca`,
/// `sasl_ssl`, `SCRAM-SHA-512`): their names in clap's `ValueEnum`, which is what parses them.
macro_rules! display_as_setting {
    ($($kind:ty),+) => {$(
        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let value = clap::ValueEnum::to_possible_value(self)
                    .expect("every value of a setting has a name");
                f.write_str(value.get_name())
            }
        }
    )+};
}

display_as_setting!(SslMode, KafkaSecurityProtocol, KafkaSaslMechanism);

/// Logs and the admin listener (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter in tracing's env-filter syntax.
    #[arg(
        long = "log-level",
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info"
    )]
    pub log_filter: String,
}

/// PostgreSQL: either a full URL or the original's host settings.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Full connection URL; when set, the DB_* settings are ignored.
    #[arg(long, env, hide_env_values = true)]
    pub database_url: Option<SecretUrl>,
    #[arg(long, env, default_value = "127.0.0.1")]
    pub db_host: String,
    #[arg(long, env, default_value_t = 5432)]
    pub db_port: u16,
    #[arg(long, env, default_value = "postgres")]
    pub db_user: String,
    #[arg(long, env, default_value = "", hide_env_values = true)]
    pub db_password: Secret,
    /// TLS to PostgreSQL: `disable`, `prefer` (when the server offers it), `require`,
    /// `verify-ca` or `verify-full` (the certificate, and for `verify-full` the host name, are
    /// checked against DB_SSLROOTCERT, else the public web roots).
    #[arg(long, env, value_enum, default_value_t = SslMode::Prefer)]
    pub db_sslmode: SslMode,
    /// PEM file of the CA that signed the server's certificate (for `verify-ca`/`verify-full`).
    #[arg(long, env)]
    pub db_sslrootcert: Option<String>,
    /// Database name; each service has its own default (`user`, `product`, ...).
    #[arg(long, env)]
    pub db_name: Option<String>,
    /// Most connections the pool opens.
    #[arg(long, env, default_value_t = 16)]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    /// The URL to connect with; `default_name` is the service's own database.
    pub fn url(&self, default_name: &str) -> String {
        if let Some(url) = &self.database_url {
            return url.expose().to_owned();
        }
        let encode = |part: &str| utf8_percent_encode(part, NON_ALPHANUMERIC).to_string();
        let name = encode(self.db_name.as_deref().unwrap_or(default_name));
        let auth = if self.db_password.is_empty() {
            encode(&self.db_user)
        } else {
            format!(
                "{}:{}",
                encode(&self.db_user),
                encode(self.db_password.expose())
            )
        };
        let host = if self.db_host.contains(':') && !self.db_host.starts_with('[') {
            format!("[{}]", self.db_host) // an IPv6 address
        } else {
            self.db_host.clone()
        };
        let mut url = format!(
            "postgres://{auth}@{host}:{}/{name}?sslmode={}",
            self.db_port, self.db_sslmode
        );
        if let Some(root) = &self.db_sslrootcert {
            url.push_str(&format!("&sslrootcert={}", encode(root)));
        }
        url
    }
}

/// Redis.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Full URL (`redis://host:port/db`); when set, REDIS_HOST and REDIS_PORT are ignored.
    #[arg(long, env, hide_env_values = true)]
    pub redis_url: Option<SecretUrl>,
    #[arg(long, env, default_value = "127.0.0.1")]
    pub redis_host: String,
    #[arg(long, env, default_value_t = 6379)]
    pub redis_port: u16,
    /// Password of REDIS_HOST (`requirepass`); none when it has none.
    #[arg(long, env, hide_env_values = true)]
    pub redis_password: Option<Secret>,
    /// Prefix of every key this process writes, so several shops or test runs share a Redis.
    #[arg(long, env, default_value = "letsgo:")]
    pub redis_key_prefix: String,
    /// PEM file of the CA that signs Redis's certificate, for a `rediss://` REDIS_URL whose
    /// server the system's roots do not vouch for.
    #[arg(long, env)]
    pub redis_ca_file: Option<String>,
}

impl RedisArgs {
    /// A client of the Redis these settings name, over TLS when the URL is `rediss://`;
    /// errors name the setting at fault.
    #[cfg(feature = "redis")]
    pub fn client(&self) -> Result<redis::Client, String> {
        use redis::IntoConnectionInfo;
        let url = self.url();
        let info = url
            .as_str()
            .into_connection_info()
            .map(|info| info.set_tcp_settings(redis_tcp_settings()))
            .map_err(|error| {
                format!(
                    "REDIS_URL: {}",
                    error.to_string().replace(&url, "<redacted>")
                )
            })?;
        let Some(ca_file) = &self.redis_ca_file else {
            return redis::Client::open(info).map_err(|error| format!("REDIS_URL: {error}"));
        };
        if !url.starts_with("rediss://") {
            return Err(
                "REDIS_CA_FILE is set, so REDIS_URL must be a TLS URL (rediss://...)".to_owned(),
            );
        }
        let root_cert = std::fs::read(ca_file)
            .map_err(|error| format!("REDIS_CA_FILE: cannot read {ca_file}: {error}"))?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        redis::Client::build_with_tls(info, certificates)
            .map_err(|error| format!("REDIS_CA_FILE ({ca_file}): {error}"))
    }

    pub fn url(&self) -> String {
        match &self.redis_url {
            Some(url) => url.expose().to_owned(),
            None => match &self.redis_password {
                Some(password) => format!(
                    "redis://:{}@{}:{}/",
                    utf8_percent_encode(password.expose(), NON_ALPHANUMERIC),
                    self.redis_host,
                    self.redis_port
                ),
                None => format!("redis://{}:{}/", self.redis_host, self.redis_port),
            },
        }
    }
}

/// Kafka.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Comma-separated bootstrap brokers.
    #[arg(long, env, default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of every topic name, so several shops or test runs share a cluster.
    #[arg(long, env, default_value = "")]
    pub kafka_topic_prefix: String,
    /// Partitions of each topic the services create (topics that exist are left as they are).
    #[arg(long, env, default_value_t = 3)]
    pub kafka_topic_partitions: i32,
    /// Replicas of each topic the services create: 1 for one broker, 3 for a production cluster.
    #[arg(long, env, default_value_t = 1)]
    pub kafka_topic_replication: i32,
    /// How the connection to the brokers is secured, as librdkafka names it: `plaintext`,
    /// `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[arg(long, env, value_enum, default_value_t = KafkaSecurityProtocol::Plaintext)]
    pub kafka_security_protocol: KafkaSecurityProtocol,
    /// SASL mechanism when the protocol is `sasl_*`.
    #[arg(long, env, value_enum, default_value_t = KafkaSaslMechanism::ScramSha512)]
    pub kafka_sasl_mechanism: KafkaSaslMechanism,
    /// SASL user name; needed when the protocol is `sasl_*`.
    #[arg(long, env)]
    pub kafka_sasl_username: Option<String>,
    /// SASL password; needed when the protocol is `sasl_*`.
    #[arg(long, env, hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,
    /// PEM file of the CA that signs the brokers' certificates (`ssl` and `sasl_ssl`); the
    /// system's roots when absent.
    #[arg(long, env)]
    pub kafka_ca_file: Option<String>,
    /// How long the outbox relay waits after publishing a batch that was not full, so the
    /// next one gathers the events written meanwhile (fewer, larger rounds under steady
    /// writes); 0 publishes again at once.
    #[arg(long = "outbox-gather-ms", env = "OUTBOX_GATHER_MS", value_name = "OUTBOX_GATHER_MS", default_value = "25", value_parser = parse_gather)]
    pub outbox_gather: Duration,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSecurityProtocol {
    #[value(name = "plaintext")]
    Plaintext,
    #[value(name = "ssl")]
    Ssl,
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    #[cfg(feature = "kafka")]
    fn uses_sasl(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::SaslPlaintext | KafkaSecurityProtocol::SaslSsl
        )
    }

    #[cfg(feature = "kafka")]
    fn uses_tls(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::Ssl | KafkaSecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSaslMechanism {
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "PLAIN")]
    Plain,
}

impl KafkaArgs {
    /// Brokers and prefix, with topics made as the defaults say (tests, tools).
    pub fn new(brokers: &str, topic_prefix: &str) -> Self {
        KafkaArgs {
            kafka_brokers: brokers.to_owned(),
            kafka_topic_prefix: topic_prefix.to_owned(),
            kafka_topic_partitions: 3,
            kafka_topic_replication: 1,
            kafka_security_protocol: KafkaSecurityProtocol::Plaintext,
            kafka_sasl_mechanism: KafkaSaslMechanism::ScramSha512,
            kafka_sasl_username: None,
            kafka_sasl_password: None,
            kafka_ca_file: None,
            outbox_gather: Duration::from_millis(25),
        }
    }

    /// The connection settings every client of these brokers shares (brokers, TLS, SASL), or
    /// the first setting that contradicts another, named.
    #[cfg(feature = "kafka")]
    pub fn client_config(&self) -> Result<rdkafka::ClientConfig, String> {
        let protocol = self.kafka_security_protocol;
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &self.kafka_brokers)
            .set("security.protocol", protocol.to_string());
        if protocol.uses_sasl() {
            let username = self
                .kafka_sasl_username
                .as_deref()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    format!(
                        "KAFKA_SASL_USERNAME must be set when KAFKA_SECURITY_PROTOCOL is {}",
                        protocol
                    )
                })?;
            let password = self
                .kafka_sasl_password
                .as_ref()
                .map(Secret::expose)
                .filter(|password| !password.is_empty())
                .ok_or_else(|| {
                    format!(
                        "KAFKA_SASL_PASSWORD must be set when KAFKA_SECURITY_PROTOCOL is {}",
                        protocol
                    )
                })?;
            config
                .set("sasl.mechanism", self.kafka_sasl_mechanism.to_string())
                .set("sasl.username", username)
                .set("sasl.password", password);
        } else if [
            self.kafka_sasl_username.as_deref(),
            self.kafka_sasl_password.as_ref().map(Secret::expose),
        ]
        .iter()
        .any(|value| value.is_some_and(|value| !value.is_empty()))
        {
            return Err(format!(
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are used only when \
                 KAFKA_SECURITY_PROTOCOL is sasl_plaintext or sasl_ssl, not {}",
                protocol
            ));
        }
        match self.kafka_ca_file.as_deref().filter(|ca| !ca.is_empty()) {
            Some(ca) if protocol.uses_tls() => {
                config.set("ssl.ca.location", ca);
            }
            Some(_) => {
                return Err(format!(
                    "KAFKA_CA_FILE is used only when KAFKA_SECURITY_PROTOCOL is ssl or sasl_ssl, \
                     not {}",
                    protocol
                ));
            }
            None => {}
        }
        Ok(config)
    }
}

/// How a service consumes events: when it gives up on one, and how long it remembers the ones
/// it handled.
#[derive(Debug, Clone, Args)]
pub struct EventConsumerArgs {
    /// Failures of one event (not counting outages, which are waited out) before it is parked
    /// in the `dead_letters` table and the consumer moves on.
    #[arg(long, env, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub event_max_attempts: u32,
    /// How long the ids of handled events are kept to recognise redeliveries; keep it longer
    /// than the topics' retention (Kafka's default: 7 days).
    #[arg(long = "handled-events-retention-secs", env = "HANDLED_EVENTS_RETENTION_SECS", value_name = "HANDLED_EVENTS_RETENTION_SECS", default_value = "1209600", value_parser = parse_secs)]
    pub handled_events_retention: Duration,
}

/// Signing and checking of sign-in tokens.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HMAC key for HS256 tokens; at least 32 bytes (RFC 7518: a key as long as the hash).
    #[arg(long, env, hide_env_values = true, value_parser = SecretParser(check_jwt_secret))]
    pub jwt_secret: Secret,
    /// Token lifetime in seconds.
    #[arg(long = "jwt-ttl-secs", env = "JWT_TTL_SECS", value_name = "JWT_TTL_SECS", default_value = "86400", value_parser = parse_secs)]
    pub jwt_ttl: Duration,
    #[arg(long, env, default_value = "letsgo")]
    pub jwt_issuer: String,
    #[arg(long, env, default_value = "letsgo-api")]
    pub jwt_audience: String,
}

/// Shortest HMAC-SHA256 key accepted for tokens and webhooks: RFC 7518 asks for a key at least
/// as long as the hash's output.
pub const HMAC_KEY_MIN_BYTES: usize = 32;

fn check_jwt_secret(text: &str) -> Result<(), String> {
    if text.len() < HMAC_KEY_MIN_BYTES {
        return Err(format!(
            "must be at least {HMAC_KEY_MIN_BYTES} bytes long (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

/// Parses a secret setting, refusing what `check` refuses. The refusal names the setting and
/// never quotes the value: clap's error for an ordinary value parser does, and it goes to
/// stderr and the pod's log.
#[derive(Clone, Copy)]
pub struct SecretParser(pub fn(&str) -> Result<(), String>);

impl clap::builder::TypedValueParser for SecretParser {
    type Value = Secret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Secret, clap::Error> {
        let name = arg
            .and_then(|arg| arg.get_value_names())
            .and_then(|names| names.first())
            .map_or_else(|| "the secret".to_owned(), ToString::to_string);
        let refused = |kind, reason: &str| {
            clap::Error::raw(kind, format!("{name}: {reason}\n")).with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused(clap::error::ErrorKind::InvalidUtf8, "must be UTF-8"))?;
        (self.0)(text)
            .map_err(|reason| refused(clap::error::ErrorKind::ValueValidation, &reason))?;
        Ok(Secret::new(text))
    }
}

/// A value that must never reach a log line or an error: its `Debug` shows `<redacted>`, it
/// has no `Display`, and code that needs the value says so with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that uses it (a connection, a MAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::new(text))
    }
}

/// A connection URL that may carry a password (`postgres://shop:pw@db/x`): its `Debug` shows
/// the URL with the password redacted; [`SecretUrl::expose`] gives the whole URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<SecretUrl, Self::Err> {
        Ok(SecretUrl::new(text))
    }
}

/// What a Debug print shows instead of a secret.
const REDACTED: &str = "<redacted>";

/// A URL with its password replaced, for Debug prints (`postgres://shop:<redacted>@db/x`).
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:{REDACTED}{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A gRPC service's listeners.
#[derive(Debug, Clone, Args)]
pub struct GrpcServerArgs {
    /// Address the gRPC server listens on; each service has its own default port.
    #[arg(long, env = "GRPC_LISTEN", value_name = "GRPC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env)]
    pub admin_listen: Option<SocketAddr>,
    /// Longest a request may take before it is answered DEADLINE_EXCEEDED.
    #[arg(long = "request-timeout-ms", env = "REQUEST_TIMEOUT_MS", value_name = "REQUEST_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis)]
    pub request_timeout: Duration,
    /// Most calls processed at once, over all connections; beyond it calls are refused at once
    /// with UNAVAILABLE.
    #[arg(long, env, default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Serve gRPC reflection (for grpcurl and the like). Off: it lists every method to anyone.
    #[arg(long, env, default_value_t = false, action = clap::ArgAction::Set)]
    pub grpc_reflection: bool,
}

/// How long data sent to Redis may go unacknowledged before the kernel gives the connection up.
/// A Redis that vanished without closing its connections (its node lost, its network cut)
/// sends no reset: without this the connection stays open, every command on it times out, and
/// the connection manager, which reconnects only once a connection is known to be dropped,
/// makes no new one until the kernel gives up on its own, many minutes later. With it the
/// connection breaks within seconds and the next command reconnects.
#[cfg(feature = "redis")]
pub const REDIS_UNACKNOWLEDGED_MAX: std::time::Duration = std::time::Duration::from_secs(4);

#[cfg(feature = "redis")]
fn redis_tcp_settings() -> redis::io::tcp::TcpSettings {
    let settings = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(REDIS_UNACKNOWLEDGED_MAX);
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn setting_values_print_as_they_are_written() {
        use clap::ValueEnum;
        let written = |kind: &[String]| kind.join(" ");
        let ssl: Vec<String> = SslMode::value_variants()
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            written(&ssl),
            "disable allow prefer require verify-ca verify-full"
        );
        let protocols: Vec<String> = KafkaSecurityProtocol::value_variants()
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(written(&protocols), "plaintext ssl sasl_plaintext sasl_ssl");
        let mechanisms: Vec<String> = KafkaSaslMechanism::value_variants()
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(written(&mechanisms), "SCRAM-SHA-512 SCRAM-SHA-256 PLAIN");
        // And each reads back as itself.
        for value in SslMode::value_variants() {
            assert_eq!(SslMode::from_str(&value.to_string(), false), Ok(*value));
        }
    }

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        jwt: JwtArgs,
    }

    #[derive(Parser, Debug)]
    struct KafkaProbe {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn the_outbox_gather_is_at_most_a_second_and_a_bad_one_is_named() {
        let gather = |value: &str| {
            KafkaProbe::try_parse_from(["probe".to_owned(), format!("--outbox-gather-ms={value}")])
                .map(|probe| probe.kafka.outbox_gather)
                .map_err(|error| error.to_string())
        };
        assert_eq!(
            KafkaProbe::try_parse_from(["probe"])
                .unwrap()
                .kafka
                .outbox_gather,
            Duration::from_millis(25)
        );
        assert_eq!(gather("0"), Ok(Duration::ZERO));
        assert_eq!(gather("1000"), Ok(Duration::from_secs(1)));
        for bad in ["1001", "25000", "-1", "fast"] {
            let error = gather(bad).unwrap_err();
            assert!(error.contains("OUTBOX_GATHER_MS"), "{bad}: {error}");
        }
    }

    #[test]
    fn database_url_is_built_from_host_settings() {
        let probe = Probe::try_parse_from([
            "probe",
            "--db-host",
            "db.internal",
            "--db-password",
            "pw",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        assert_eq!(
            probe.db.url("user"),
            "postgres://postgres:pw@db.internal:5432/user?sslmode=prefer"
        );
    }

    #[test]
    #[cfg(feature = "postgres")]
    fn database_url_escapes_credentials_and_carries_tls_settings() {
        let probe = Probe::try_parse_from([
            "probe",
            "--db-host",
            "::1",
            "--db-user",
            "shop@prod",
            "--db-password",
            "p@ss/w:rd?#",
            "--db-sslmode",
            "verify-full",
            "--db-sslrootcert",
            "/etc/ssl/db ca.pem",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        let url = probe.db.url("order");
        assert_eq!(
            url,
            "postgres://shop%40prod:p%40ss%2Fw%3Ard%3F%23@[::1]:5432/order?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Fdb%20ca%2Epem"
        );
        let options = crate::db::connect_options(&url).unwrap();
        assert_eq!(options.get_username(), "shop@prod");
        // Unbracketed, as TLS wants the server name.
        assert_eq!(options.get_host(), "::1");
        assert!(matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::VerifyFull
        ));

        let error = Probe::try_parse_from([
            "probe",
            "--db-sslmode",
            "sometimes",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("DB_SSLMODE"), "{error}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_prints() {
        let probe = Probe::try_parse_from([
            "probe",
            "--database-url",
            "postgres://shop:db-pass-Zq81@db.internal:5432/user",
            "--db-password",
            "host-pass-Kx22",
            "--jwt-secret",
            "jwt-secret-value-0123456789abcdef-Mw47",
        ])
        .unwrap();
        let printed = format!("{probe:?}");
        for secret in ["db-pass-Zq81", "host-pass-Kx22", "jwt-secret-value"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(
            printed.contains("postgres://shop:<redacted>@db.internal:5432/user"),
            "{printed}"
        );
        let redis = super::redact_url("redis://:cache-pass@cache:6379/0");
        assert_eq!(redis, "redis://:<redacted>@cache:6379/0");
        assert_eq!(
            super::redact_url("redis://cache:6379/0"),
            "redis://cache:6379/0"
        );
    }

    #[test]
    fn a_redis_password_goes_into_the_url_encoded_and_prints_redacted() {
        #[derive(Parser, Debug)]
        struct RedisProbe {
            #[command(flatten)]
            redis: RedisArgs,
        }
        let probe = RedisProbe::try_parse_from([
            "probe",
            "--redis-host",
            "cache",
            "--redis-password",
            "p@ss/w:rd-Qv93",
        ])
        .unwrap();
        assert_eq!(
            probe.redis.url(),
            "redis://:p%40ss%2Fw%3Ard%2DQv93@cache:6379/"
        );
        assert!(!format!("{probe:?}").contains("Qv93"), "{probe:?}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused_by_name_without_repeating_it() {
        let error = Probe::try_parse_from(["probe", "--jwt-secret", "tiny-Zq81"]).unwrap_err();
        assert!(error.to_string().contains("JWT_SECRET"), "{error}");
        assert!(!error.to_string().contains("tiny-Zq81"), "{error}");
    }

    #[test]
    fn a_malformed_port_is_refused_by_name() {
        let error = Probe::try_parse_from([
            "probe",
            "--db-port",
            "eighty",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("DB_PORT"), "{error}");
    }
}
