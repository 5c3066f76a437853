//! The shop as it runs in production: each service its own process, started from the binary
//! the workspace built, for what only crosses processes (trace context in metadata, a process
//! killed or stopped). Its data is its own, as an in-process [`Shop`](crate::Shop)'s is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use letsgo_platform::discovery::ServiceName;
use letsgo_test_topics::TopicPrefix;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::scratch::{ScratchDatabase, delete_redis_keys};
use crate::{ADMIN_PASSWORD, JWT_SECRET, WEBHOOK_SECRET};
use crate::{kafka_brokers, postgres_url, redis_url};

/// The binaries in start order: callees before their callers, the gateway last.
const SERVICES: [ServiceName; 5] = [
    ServiceName::User,
    ServiceName::Product,
    ServiceName::Cart,
    ServiceName::Order,
    ServiceName::Payment,
];

/// Every service and the gateway, each a child process of the test. Dropped, the processes
/// get SIGTERM (SIGKILL after 10 s), the databases are dropped and the Redis keys deleted.
pub struct ShopProcesses {
    id: String,
    children: Vec<(String, Child)>,
    gateway: SocketAddr,
    logs: PathBuf,
    _databases: Vec<ScratchDatabase>,
    _topics: TopicPrefix,
}

/// A loopback address nobody listens on now. The port is released before the process binds
/// it: another process could take it in between, which the start would then report.
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address")
}

/// The directory the workspace's binaries are built into: the test binary's own profile
/// directory (`target/debug/deps/..` -> `target/debug`).
fn binaries() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    profile.to_path_buf()
}

impl ShopProcesses {
    /// Starts the shop, every process with `env` added to its environment (and none of the
    /// test's own `OTEL_` variables), and waits until each answers its readiness probe.
    pub async fn start(env: &[(&str, &str)]) -> ShopProcesses {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let bin = binaries();
        for name in SERVICES
            .iter()
            .map(|service| service.binary())
            .chain(["letsgo-gateway".to_owned()])
        {
            assert!(
                bin.join(&name).is_file(),
                "{name} is not built in {}: build the workspace's binaries first \
                 (`cargo build --workspace --bins`; `make test` builds them)",
                bin.display()
            );
        }
        let logs = std::env::temp_dir().join(format!("letsgo-processes-{id}"));
        std::fs::create_dir_all(&logs).expect("a directory for the processes' logs");

        let grpc: HashMap<ServiceName, SocketAddr> = SERVICES
            .iter()
            .map(|service| (*service, free_address()))
            .collect();
        let gateway = free_address();
        let topic_prefix = format!("test-{id}.");
        let topics = TopicPrefix::exactly(topic_prefix.clone());
        let mut databases = HashMap::new();
        for service in SERVICES {
            if service.component().database().is_some() {
                let database = ScratchDatabase::create(&postgres_url())
                    .await
                    .expect("a scratch database (is PostgreSQL running? `make test` starts it)");
                databases.insert(service, database);
            }
        }

        let mut common: Vec<(String, String)> = vec![
            ("DISCOVERY".into(), "static".into()),
            ("LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("KAFKA_BROKERS".into(), kafka_brokers()),
            ("KAFKA_TOPIC_PREFIX".into(), topic_prefix.clone()),
            ("KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()),
            ("REDIS_URL".into(), redis_url()),
            ("REDIS_KEY_PREFIX".into(), format!("test:{id}:")),
        ];
        for service in SERVICES {
            common.push((
                format!("{}_RPC", service.as_str().to_ascii_uppercase()),
                grpc[&service].to_string(),
            ));
        }
        common.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));

        let mut shop = ShopProcesses {
            id,
            children: Vec::new(),
            gateway,
            logs,
            _databases: Vec::new(),
            _topics: topics,
        };
        for service in SERVICES {
            let admin = free_address();
            let mut own = vec![
                ("GRPC_LISTEN".to_owned(), grpc[&service].to_string()),
                ("ADMIN_LISTEN".to_owned(), admin.to_string()),
            ];
            if let Some(database) = databases.get(&service) {
                own.push(("DATABASE_URL".into(), database.url.clone()));
            }
            match service {
                ServiceName::User => own.push(("ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into())),
                ServiceName::Product => own.push(("DEMO_CATALOGUE".into(), "false".into())),
                ServiceName::Payment => {
                    own.push(("PAYMENT_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()));
                    own.push(("MOCK_PROVIDER_AUTOCOMPLETE".into(), "true".into()));
                    own.push((
                        "PAYMENT_CALLBACK_URL".into(),
                        format!("http://{gateway}/api/v1/payment/callback"),
                    ));
                }
                _ => {}
            }
            shop.spawn(&service.binary(), &common, &own);
            shop.wait_until_ready(admin, "/readyz").await;
        }
        let admin = free_address();
        let own = vec![
            ("GATEWAY_LISTEN".to_owned(), gateway.to_string()),
            ("ADMIN_LISTEN".to_owned(), admin.to_string()),
            ("RATE_LIMIT_PER_SECOND".to_owned(), "100000".to_owned()),
            ("RATE_LIMIT_BURST".to_owned(), "100000".to_owned()),
        ];
        shop.spawn("letsgo-gateway", &common, &own);
        shop.wait_until_ready(gateway, "/health").await;
        shop._databases = databases.into_values().collect();
        shop
    }

    fn spawn(&mut self, binary: &str, common: &[(String, String)], own: &[(String, String)]) {
        let log = std::fs::File::create(self.logs.join(format!("{binary}.log")))
            .expect("the process's log file");
        let mut command = Command::new(binaries().join(binary));
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command
            .envs(common.iter().map(|(k, v)| (k, v)))
            .envs(own.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("{binary} did not start: {error}"));
        self.children.push((binary.to_owned(), child));
    }

    async fn wait_until_ready(&mut self, addr: SocketAddr, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if status_of(addr, path).await == Some(200) {
                return;
            }
            let (name, child) = self.children.last_mut().expect("a started process");
            let name = name.clone();
            if let Ok(Some(exit)) = child.try_wait() {
                panic!(
                    "{name} exited ({exit}) while starting:\n{}",
                    self.log_of(&name)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready at http://{addr}{path} within 60 s:\n{}",
                self.log_of(&name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The gateway's base URL (`http://127.0.0.1:port`).
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    /// What `binary` has logged so far.
    pub fn log_of(&self, binary: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{binary}.log"))).unwrap_or_default()
    }

    /// Stops every process with SIGTERM, as an orchestrator does, and waits for them to exit
    /// (each flushes its last spans on the way out); answers each one's exit status.
    pub fn stop(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut stopped = Vec::new();
        // The gateway first, the services after: the reverse of the start.
        for (name, mut child) in self.children.drain(..).rev() {
            terminate(&mut child);
            let status = wait_or_kill(&mut child, Duration::from_secs(10));
            stopped.push((name, status));
        }
        stopped
    }
}

/// The status of `GET path` at `addr`, `None` while nothing answers.
async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut connection = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    connection.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    connection.read_to_end(&mut answer).await.ok()?;
    let head = String::from_utf8_lossy(&answer);
    head.split(' ').nth(1)?.parse().ok()
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

fn wait_or_kill(child: &mut Child, budget: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + budget;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait().expect("the killed process's status");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for ShopProcesses {
    fn drop(&mut self) {
        self.stop();
        delete_redis_keys(redis_url(), format!("test:{}:", self.id));
        if std::thread::panicking() {
            eprintln!("the processes' logs are kept in {}", self.logs.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}
