//! Apache Kafka brokers of a test's own, for tests that do to a broker what must not touch the
//! shared one (pause it, kill it, speak TLS to it). The same Kafka that `make up` and the shared
//! test broker run: the install `scripts/middleware.sh test-tools` names in LETSGO_KAFKA_HOME,
//! one KRaft node (broker and controller) in a directory of its own, on free loopback ports.
//! Stopped, and its directory removed, when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Files a TLS listener serves: the certificate chain and its unencrypted PKCS#8 key, in PEM.
pub struct KafkaTls {
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
    /// The CA that signed the chain (Kafka checks at start that a client trusting it connects).
    pub ca_certificate: PathBuf,
    /// The host name the broker tells clients to come back to (it must be in the certificate).
    pub advertised_host: String,
}

/// A running broker of a test's own.
pub struct KafkaBroker {
    child: Option<Child>,
    dir: PathBuf,
    address: String,
}

impl KafkaBroker {
    /// A plaintext broker on 127.0.0.1.
    pub fn start() -> KafkaBroker {
        KafkaBroker::launch(None)
    }

    /// A broker whose only client listener speaks TLS.
    pub fn start_tls(tls: KafkaTls) -> KafkaBroker {
        KafkaBroker::launch(Some(tls))
    }

    fn launch(tls: Option<KafkaTls>) -> KafkaBroker {
        let home = kafka_home();
        let dir =
            std::env::temp_dir().join(format!("letsgo-kafka-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = free_port();
        let controller = free_port();
        let (listener, advertised) = match &tls {
            None => (
                format!("PLAINTEXT://127.0.0.1:{port}"),
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            Some(tls) => (
                format!("SSL://127.0.0.1:{port}"),
                format!("SSL://{}:{port}", tls.advertised_host),
            ),
        };
        let mut properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\n\
             listeners={listener},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners={advertised}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name={}\n\
             log.dirs={}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             log.segment.bytes=1048576\n\
             log.index.size.max.bytes=65536\n",
            if tls.is_some() { "SSL" } else { "PLAINTEXT" },
            dir.join("data").display(),
        );
        if let Some(tls) = &tls {
            // One PEM file with the key and the chain is what Kafka's PEM key store reads.
            let mut pem = std::fs::read_to_string(&tls.private_key).unwrap();
            pem.push_str(&std::fs::read_to_string(&tls.certificate_chain).unwrap());
            let store = dir.join("broker.pem");
            std::fs::write(&store, pem).unwrap();
            properties.push_str(&format!(
                "ssl.keystore.type=PEM\nssl.keystore.location={}\n\
                 ssl.truststore.type=PEM\nssl.truststore.location={}\n",
                store.display(),
                tls.ca_certificate.display()
            ));
        }
        let config = dir.join("server.properties");
        std::fs::write(&config, properties).unwrap();
        let log = dir.join("broker.log");
        let classpath = format!("{}/libs/*", home.display());
        let formatted = Command::new(java())
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "format"])
            // One argument with `=`: an id may begin with `-`, which alone reads as an option.
            .arg(format!("--cluster-id={}", cluster_id()))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run java ({error}): install openjdk-17-jre-headless")
            });
        assert!(
            formatted.status.success(),
            "formatting a Kafka log directory failed: {}",
            String::from_utf8_lossy(&formatted.stderr)
        );
        let child = Command::new(java())
            .args([
                "-Xms32m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .args(["-cp", &classpath, "kafka.Kafka"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start java ({error}): install openjdk-17-jre-headless")
            });
        let mut broker = KafkaBroker {
            child: Some(child),
            dir,
            address: format!(
                "{}:{port}",
                tls.as_ref()
                    .map_or("127.0.0.1", |tls| tls.advertised_host.as_str())
            ),
        };
        broker.wait_until_started(&log);
        broker
    }

    /// `host:port` for KAFKA_BROKERS.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The broker's process id (to pause or kill it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (as `kill` names it: `-STOP`, `-CONT`, `-KILL`) to the broker.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// The broker logs "Kafka Server started" once it serves clients.
    fn wait_until_started(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Kafka Server started") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("Kafka broker exited ({status}) while starting; its log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "Kafka broker not started after 90 s; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused broker cannot die of SIGKILL until it runs again.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The test failed: what the broker said is part of why.
            let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("the last lines of the test's Kafka broker's log:");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Apache Kafka install (LETSGO_KAFKA_HOME, with its jars in libs/).
pub fn kafka_home() -> PathBuf {
    let home = std::env::var_os("LETSGO_KAFKA_HOME")
        .map(PathBuf::from)
        .expect(
            "LETSGO_KAFKA_HOME must name the Apache Kafka install for brokers of a test's own: \
         eval \"$(scripts/middleware.sh test-tools)\" (make test does this)",
        );
    assert!(
        home.join("libs").is_dir(),
        "LETSGO_KAFKA_HOME={} has no libs/: run scripts/middleware.sh test-tools",
        home.display()
    );
    home
}

fn java() -> String {
    std::env::var("JAVA").unwrap_or_else(|_| "java".to_owned())
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka makes them.
fn cluster_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().into_bytes())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = super::cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert_ne!(id, super::cluster_id());
    }
}
