//! Kubernetes: each service's headless Service name resolves, through cluster DNS, to the
//! addresses of its ready pods. The name is re-resolved periodically, so scale-up and
//! scale-down reach clients without restarts and without any Kubernetes API access.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::watch;
use tonic::transport::Uri;

use super::{EndpointSource, ServiceName};

/// The first wait before asking again for a service with no ready Pod, and the longest.
const EMPTY_FIRST_WAIT: Duration = Duration::from_millis(250);
const EMPTY_MAX_WAIT: Duration = Duration::from_secs(1);

pub struct DnsSource {
    resolver: Arc<Resolver<TokioRuntimeProvider>>,
    name_template: String,
    refresh: Duration,
    /// The set of each watched service, while its poller runs: a poller whose last watcher has
    /// gone removes its entry as it ends, under this lock, so a later watch starts a new one.
    sets: Arc<Mutex<HashMap<ServiceName, watch::Sender<Vec<Uri>>>>>,
}

impl DnsSource {
    /// `name_template` holds `{service}` (e.g. `letsgo-{service}`); `server` replaces the
    /// system's resolvers (tests, or a cluster DNS reached directly).
    pub fn new(
        name_template: &str,
        server: Option<SocketAddr>,
        refresh: Duration,
    ) -> Result<DnsSource, String> {
        let mut builder = match server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|error| error.to_string())?,
        };
        // Answers are re-asked every refresh: never keep one longer.
        builder.options_mut().positive_max_ttl = Some(refresh);
        // A missing name is asked again sooner (see EMPTY_FIRST_WAIT): never keep its answer longer.
        builder.options_mut().negative_max_ttl = Some(EMPTY_FIRST_WAIT);
        let resolver = builder.build().map_err(|error| error.to_string())?;
        Ok(DnsSource {
            resolver: Arc::new(resolver),
            name_template: name_template.to_owned(),
            refresh,
            sets: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn name_of(&self, service: ServiceName) -> String {
        self.name_template.replace("{service}", service.as_str())
    }
}

impl EndpointSource for DnsSource {
    fn watch(&self, service: ServiceName) -> watch::Receiver<Vec<Uri>> {
        let mut sets = self.sets.lock().expect("dns sets lock");
        if let Some(sender) = sets.get(&service) {
            return sender.subscribe();
        }
        let sender = watch::Sender::new(Vec::new());
        let resolver = self.resolver.clone();
        let name = self.name_of(service);
        let port = service.default_port();
        let refresh = self.refresh;
        let publisher = sender.clone();
        let all_sets = self.sets.clone();
        tokio::spawn(async move {
            // The first answer always notifies: it tells waiting callers the set is known.
            let mut first = true;
            // While no Pod is ready, ask again soon (from a quarter second, doubling up to a
            // second, never beyond the refresh): a service that just turned ready is called
            // within a second, not after a whole refresh of failed calls (a shop whose Store
            // had just turned Ready answered 503 for up to five seconds).
            let mut empty_wait = EMPTY_FIRST_WAIT;
            loop {
                match resolver.lookup_ip(name.as_str()).await {
                    Ok(found) => {
                        let mut ips: Vec<IpAddr> = found.iter().collect();
                        ips.sort();
                        ips.dedup();
                        let set: Vec<Uri> = ips
                            .into_iter()
                            .filter_map(|ip| {
                                format!("http://{}", SocketAddr::new(ip, port)).parse().ok()
                            })
                            .collect();
                        publisher.send_if_modified(|current| {
                            let changed = *current != set;
                            *current = set;
                            changed || first
                        });
                        first = false;
                    }
                    Err(error) if error.is_no_records_found() || error.is_nx_domain() => {
                        // No ready pod: an empty set, so callers fail fast.
                        publisher.send_if_modified(|current| {
                            let changed = !current.is_empty();
                            current.clear();
                            changed || first
                        });
                        first = false;
                    }
                    // A DNS hiccup keeps the last known set.
                    Err(error) => tracing::warn!(%error, %name, "DNS lookup failed"),
                }
                {
                    // Checked under the lock `watch` subscribes under: nobody can subscribe
                    // to a set whose poller is ending.
                    let mut sets = all_sets.lock().expect("dns sets lock");
                    if publisher.receiver_count() == 0 {
                        sets.remove(&service);
                        return;
                    }
                }
                let wait = if publisher.borrow().is_empty() {
                    let wait = empty_wait.min(refresh);
                    empty_wait = (empty_wait * 2).min(EMPTY_MAX_WAIT);
                    wait
                } else {
                    empty_wait = EMPTY_FIRST_WAIT;
                    refresh
                };
                tokio::time::sleep(wait).await;
            }
        });
        let receiver = sender.subscribe();
        sets.insert(service, sender);
        receiver
    }
}
