//! Finding the services: one interface ([`EndpointSource`]) whose sources publish the current
//! set of addresses of a service, and [`Discovery`], which turns a service name into an
//! [`RpcChannel`] balanced across that set and kept in step with it.
//!
//! Three sources, picked by `DISCOVERY=auto|kubernetes|etcd|static`:
//! - kubernetes ([`dns`]): headless Service names through cluster DNS, re-resolved periodically;
//! - etcd ([`etcd`]): instances register under a lease; clients watch the prefix;
//! - static: explicit addresses.
//!
//! `auto` picks kubernetes inside a cluster (KUBERNETES_SERVICE_HOST is set), else etcd when
//! ETCD_HOSTS is set, else static.

pub mod breaker;
pub mod dns;
pub mod etcd;
pub mod rpc_channel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;
use tonic::transport::Uri;

pub use rpc_channel::RpcChannel;

use crate::shutdown::Shutdown;

/// The services a client may look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceName {
    User,
    Product,
    Cart,
    Order,
    Payment,
}

impl ServiceName {
    pub const ALL: [ServiceName; 5] = [
        ServiceName::User,
        ServiceName::Product,
        ServiceName::Cart,
        ServiceName::Order,
        ServiceName::Payment,
    ];

    /// The component the shop's facts know this service as.
    pub const fn component(self) -> letsgo_facts::Component {
        match self {
            ServiceName::User => letsgo_facts::Component::User,
            ServiceName::Product => letsgo_facts::Component::Product,
            ServiceName::Cart => letsgo_facts::Component::Cart,
            ServiceName::Order => letsgo_facts::Component::Order,
            ServiceName::Payment => letsgo_facts::Component::Payment,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.component().as_str()
    }

    /// The port the design assigns to the service's gRPC server.
    pub const fn default_port(self) -> u16 {
        self.component().serving_port()
    }

    /// The port of the service's admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub const fn default_admin_port(self) -> u16 {
        self.component().admin_port()
    }

    /// The default listeners: gRPC on the service's port, admin on its admin port, every
    /// interface of both families ([`crate::listen`]).
    pub fn default_addresses(self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        (
            crate::listen::any(self.default_port()),
            crate::listen::any(self.default_admin_port()),
        )
    }

    /// The service's binary, as logs and errors name it.
    pub fn binary(self) -> String {
        self.component().binary()
    }
}

/// Where the addresses come from.
#[derive(Debug, Clone, Args)]
pub struct DiscoveryArgs {
    #[command(flatten)]
    pub internal_auth: crate::internal_auth::InternalAuthArgs,
    /// `auto`, `kubernetes`, `etcd` or `static`.
    #[arg(long, env, value_enum, default_value_t = DiscoveryChoice::Auto)]
    pub discovery: DiscoveryChoice,
    /// etcd endpoints, comma-separated (`127.0.0.1:2379`).
    #[arg(long, env)]
    pub etcd_hosts: Option<String>,
    /// Key prefix of the registrations in etcd; shops sharing an etcd use different ones.
    #[arg(long, env, default_value = "/letsgo/services/")]
    pub etcd_prefix: String,
    /// Lifetime of a registration that is no longer kept alive (an instance that died).
    #[arg(long = "etcd-lease-ttl-secs", env = "ETCD_LEASE_TTL_SECS", value_name = "ETCD_LEASE_TTL_SECS", default_value = "10", value_parser = crate::config::parse_secs)]
    pub etcd_lease_ttl: Duration,
    /// Host this instance registers itself under in etcd (its port is the one it bound).
    #[arg(long, env, default_value = "127.0.0.1")]
    pub advertise_host: String,
    /// DNS name of each service's headless Service; `{service}` becomes user, product, ...
    #[arg(
        long = "discovery-dns-name",
        env = "DISCOVERY_DNS_NAME",
        value_name = "DISCOVERY_DNS_NAME",
        default_value = "letsgo-{service}"
    )]
    pub dns_name: String,
    /// A DNS server to ask instead of the system's (`ip:port`).
    #[arg(
        long = "discovery-dns-server",
        env = "DISCOVERY_DNS_SERVER",
        value_name = "DISCOVERY_DNS_SERVER"
    )]
    pub dns_server: Option<SocketAddr>,
    /// How often DNS names are resolved again.
    #[arg(long = "discovery-refresh-ms", env = "DISCOVERY_REFRESH_MS", value_name = "DISCOVERY_REFRESH_MS", default_value = "5000", value_parser = crate::config::parse_millis)]
    pub refresh: Duration,
    /// Addresses of the user service, comma-separated (static discovery).
    #[arg(long, env, default_value_t = local_rpc(ServiceName::User))]
    pub user_rpc: String,
    #[arg(long, env, default_value_t = local_rpc(ServiceName::Product))]
    pub product_rpc: String,
    #[arg(long, env, default_value_t = local_rpc(ServiceName::Cart))]
    pub cart_rpc: String,
    #[arg(long, env, default_value_t = local_rpc(ServiceName::Order))]
    pub order_rpc: String,
    #[arg(long, env, default_value_t = local_rpc(ServiceName::Payment))]
    pub payment_rpc: String,
    /// Longest wait for a TCP connection to a service.
    #[arg(long = "rpc-connect-timeout-ms", env = "RPC_CONNECT_TIMEOUT_MS", value_name = "RPC_CONNECT_TIMEOUT_MS", default_value = "1000", value_parser = crate::config::parse_millis)]
    pub connect_timeout: Duration,
    /// Deadline of each call to a service.
    #[arg(long = "rpc-timeout-ms", env = "RPC_TIMEOUT_MS", value_name = "RPC_TIMEOUT_MS", default_value = "3000", value_parser = crate::config::parse_millis)]
    pub call_timeout: Duration,
    /// How long a read waits for its answer before the same read is also sent elsewhere (to
    /// another endpoint, or on a new stream to the only one); the first answer is used. 0 never
    /// sends a read twice.
    #[arg(long = "rpc-hedge-after-ms", env = "RPC_HEDGE_AFTER_MS", value_name = "RPC_HEDGE_AFTER_MS", default_value = "1000", value_parser = crate::config::parse_millis)]
    pub hedge_after: Duration,
}

/// A service's address on this machine, as `make up` runs it: the port letsgo-facts gives it.
fn local_rpc(service: ServiceName) -> String {
    format!("127.0.0.1:{}", service.component().serving_port())
}

/// What `DISCOVERY` asks for: a source, or `auto` (Kubernetes DNS inside a cluster, etcd when
/// ETCD_HOSTS is set, static addresses otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoveryChoice {
    Auto,
    Kubernetes,
    Etcd,
    Static,
}

/// The source in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Kubernetes,
    Etcd,
    Static,
}

/// A malformed address list, named by its setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct DiscoveryConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl DiscoveryArgs {
    fn static_list(&self, service: ServiceName) -> (&'static str, &str) {
        match service {
            ServiceName::User => ("USER_RPC", &self.user_rpc),
            ServiceName::Product => ("PRODUCT_RPC", &self.product_rpc),
            ServiceName::Cart => ("CART_RPC", &self.cart_rpc),
            ServiceName::Order => ("ORDER_RPC", &self.order_rpc),
            ServiceName::Payment => ("PAYMENT_RPC", &self.payment_rpc),
        }
    }

    /// The mode `auto` resolves to here.
    pub fn mode(&self) -> Mode {
        match self.discovery {
            DiscoveryChoice::Kubernetes => Mode::Kubernetes,
            DiscoveryChoice::Etcd => Mode::Etcd,
            DiscoveryChoice::Static => Mode::Static,
            DiscoveryChoice::Auto if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                Mode::Kubernetes
            }
            DiscoveryChoice::Auto if self.etcd_hosts.is_some() => Mode::Etcd,
            DiscoveryChoice::Auto => Mode::Static,
        }
    }

    /// Builds the discovery these settings describe (connecting to etcd in etcd mode).
    pub async fn build(&self) -> Result<Discovery, DiscoveryConfigError> {
        let mode = self.mode();
        let (source, etcd): (Arc<dyn EndpointSource>, Option<etcd_client::Client>) = match mode {
            Mode::Static => {
                let mut addresses = Vec::new();
                for service in ServiceName::ALL {
                    let (setting, list) = self.static_list(service);
                    let uris = parse_address_list(list)
                        .map_err(|reason| DiscoveryConfigError { setting, reason })?;
                    addresses.push((service, uris));
                }
                (Arc::new(StaticSource::new(addresses)), None)
            }
            Mode::Etcd => {
                let hosts = self.etcd_hosts.as_deref().unwrap_or_default();
                let endpoints: Vec<&str> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .collect();
                if endpoints.is_empty() {
                    return Err(DiscoveryConfigError {
                        setting: "ETCD_HOSTS",
                        reason: "etcd discovery needs at least one endpoint".to_owned(),
                    });
                }
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(self.connect_timeout)
                    .with_timeout(Duration::from_secs(5));
                let client = etcd_client::Client::connect(&endpoints, Some(options))
                    .await
                    .map_err(|error| DiscoveryConfigError {
                        setting: "ETCD_HOSTS",
                        reason: error.to_string(),
                    })?;
                (
                    Arc::new(etcd::EtcdSource::new(client.clone(), &self.etcd_prefix)),
                    Some(client),
                )
            }
            Mode::Kubernetes => {
                let source = dns::DnsSource::new(&self.dns_name, self.dns_server, self.refresh)
                    .map_err(|reason| DiscoveryConfigError {
                        setting: "DISCOVERY_DNS_SERVER",
                        reason,
                    })?;
                (Arc::new(source), None)
            }
        };
        Ok(Discovery {
            source,
            mode,
            etcd,
            etcd_prefix: self.etcd_prefix.clone(),
            lease_ttl: self.etcd_lease_ttl,
            advertise_host: self.advertise_host.clone(),
            connect_timeout: self.connect_timeout,
            call_timeout: self.call_timeout,
            hedge_after: Some(self.hedge_after).filter(|after| !after.is_zero()),
            auth: crate::internal_auth::InternalAuth::from_args(&self.internal_auth),
        })
    }
}

/// Parses `host:port[,host:port...]`, with or without `http://`.
pub fn parse_address_list(list: &str) -> Result<Vec<Uri>, String> {
    let mut uris = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let text = if item.contains("://") {
            item.to_owned()
        } else {
            format!("http://{item}")
        };
        let uri: Uri = text
            .parse()
            .map_err(|error| format!("{item:?} is not an address: {error}"))?;
        if uri.port_u16().is_none() {
            return Err(format!("{item:?} has no port"));
        }
        uris.push(uri);
    }
    if uris.is_empty() {
        return Err("no address given".to_owned());
    }
    Ok(uris)
}

/// A source of service addresses. `watch` answers the current set and every later change.
pub trait EndpointSource: Send + Sync + 'static {
    fn watch(&self, service: ServiceName) -> watch::Receiver<Vec<Uri>>;
}

/// Fixed addresses from configuration.
pub struct StaticSource {
    sets: Vec<(ServiceName, watch::Sender<Vec<Uri>>)>,
}

impl StaticSource {
    pub fn new(addresses: Vec<(ServiceName, Vec<Uri>)>) -> Self {
        StaticSource {
            sets: addresses
                .into_iter()
                .map(|(service, uris)| (service, watch::Sender::new(uris)))
                .collect(),
        }
    }
}

impl EndpointSource for StaticSource {
    fn watch(&self, service: ServiceName) -> watch::Receiver<Vec<Uri>> {
        self.sets
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, sender)| sender.subscribe())
            .unwrap_or_else(|| watch::Sender::new(Vec::new()).subscribe())
    }
}

/// Turns service names into balanced channels, and registers instances where the mode needs it.
#[derive(Clone)]
pub struct Discovery {
    source: Arc<dyn EndpointSource>,
    mode: Mode,
    etcd: Option<etcd_client::Client>,
    etcd_prefix: String,
    lease_ttl: Duration,
    advertise_host: String,
    connect_timeout: Duration,
    call_timeout: Duration,
    hedge_after: Option<Duration>,
    auth: crate::internal_auth::InternalAuth,
}

impl Discovery {
    /// Static addresses, for tests and simple setups.
    pub fn fixed(addresses: Vec<(ServiceName, Vec<Uri>)>) -> Self {
        Discovery::from_source(Arc::new(StaticSource::new(addresses)), Mode::Static)
    }

    /// Any source, with default timeouts.
    pub fn from_source(source: Arc<dyn EndpointSource>, mode: Mode) -> Self {
        Discovery {
            source,
            mode,
            etcd: None,
            etcd_prefix: String::new(),
            lease_ttl: Duration::from_secs(10),
            advertise_host: "127.0.0.1".to_owned(),
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(3),
            hedge_after: Some(Duration::from_secs(1)),
            auth: crate::internal_auth::InternalAuth::default(),
        }
    }

    /// The shop's internal token: sent with this process's calls, required of its callers.
    pub fn internal_auth(&self) -> &crate::internal_auth::InternalAuth {
        &self.auth
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current addresses of `service`, and every later change.
    pub fn watch(&self, service: ServiceName) -> watch::Receiver<Vec<Uri>> {
        self.source.watch(service)
    }

    /// A channel to `service` that follows its addresses. Must be called inside a tokio runtime.
    pub fn channel(&self, service: ServiceName) -> RpcChannel {
        RpcChannel::follow(
            service,
            self.source.watch(service),
            self.connect_timeout,
            self.call_timeout,
            self.hedge_after,
            self.auth.clone(),
        )
    }

    /// Makes this instance of `service`, listening on `port`, findable: in etcd mode it
    /// registers (and deregisters at `shutdown`); other modes need nothing.
    pub async fn register(
        &self,
        service: ServiceName,
        port: u16,
        shutdown: Shutdown,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, etcd_client::Error> {
        let Some(client) = self.etcd.clone() else {
            return Ok(None);
        };
        let address = format!("{}:{port}", self.advertise_host);
        etcd::register(
            client,
            &self.etcd_prefix,
            service,
            address,
            self.lease_ttl,
            shutdown,
        )
        .await
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_accept_bare_and_schemed_addresses() {
        let uris = parse_address_list("127.0.0.1:9001, http://10.0.0.2:9001").unwrap();
        assert_eq!(uris.len(), 2);
        assert_eq!(uris[0].to_string(), "http://127.0.0.1:9001/");
    }

    #[test]
    fn an_address_without_a_port_is_refused() {
        assert!(parse_address_list("user-service").is_err());
        assert!(parse_address_list("").is_err());
    }

    /// The static defaults, as `--help` shows them, are the ports letsgo-facts gives the
    /// services: a port moved there moves here.
    #[test]
    fn static_default_addresses_are_the_facts_ports() {
        let mut command = <DiscoveryArgs as Args>::augment_args(clap::Command::new("service"));
        let help = command.render_long_help().to_string();
        for component in letsgo_facts::Component::SERVICES {
            let long = format!("{}-rpc", component.as_str());
            let expected = format!("127.0.0.1:{}", component.serving_port());
            let argument = command
                .get_arguments()
                .find(|argument| argument.get_long() == Some(long.as_str()))
                .unwrap_or_else(|| panic!("no --{long}"));
            let defaults: Vec<&str> = argument
                .get_default_values()
                .iter()
                .filter_map(|value| value.to_str())
                .collect();
            assert_eq!(defaults, [expected.as_str()], "--{long}");
            assert!(
                help.contains(&format!("[default: {expected}]")),
                "--help shows the default of --{long}"
            );
        }
    }
}
