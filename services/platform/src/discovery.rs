//! Finding the services: one interface ([`EndpointSource`]) whose sources publish the current
//! set of addresses of a service, and [`Discovery`], which turns a service name into a tonic
//! channel balanced across that set and kept in step with it.
//!
//! This build has the static source (explicit addresses). Kubernetes DNS and etcd sources plug
//! in behind the same trait: nothing that holds a channel changes when they arrive.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Uri};

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

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::User => "user",
            ServiceName::Product => "product",
            ServiceName::Cart => "cart",
            ServiceName::Order => "order",
            ServiceName::Payment => "payment",
        }
    }

    /// The port the design assigns to the service's gRPC server.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::User => 9001,
            ServiceName::Product => 9002,
            ServiceName::Cart => 9003,
            ServiceName::Order => 9004,
            ServiceName::Payment => 9005,
        }
    }

    /// The port of the service's admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub fn default_admin_port(self) -> u16 {
        self.default_port() + 100
    }
}

/// Where the addresses come from.
#[derive(Debug, Clone, Args)]
pub struct DiscoveryArgs {
    /// `auto` or `static`. (`kubernetes` and `etcd` arrive with the discovery issue.)
    #[arg(long = "discovery", env = "DISCOVERY", value_name = "DISCOVERY", default_value = "auto", value_parser = ["auto", "static"])]
    pub discovery: String,
    /// Addresses of the user service, comma-separated.
    #[arg(
        long = "user-rpc",
        env = "USER_RPC",
        value_name = "USER_RPC",
        default_value = "127.0.0.1:9001"
    )]
    pub user_rpc: String,
    #[arg(
        long = "product-rpc",
        env = "PRODUCT_RPC",
        value_name = "PRODUCT_RPC",
        default_value = "127.0.0.1:9002"
    )]
    pub product_rpc: String,
    #[arg(
        long = "cart-rpc",
        env = "CART_RPC",
        value_name = "CART_RPC",
        default_value = "127.0.0.1:9003"
    )]
    pub cart_rpc: String,
    #[arg(
        long = "order-rpc",
        env = "ORDER_RPC",
        value_name = "ORDER_RPC",
        default_value = "127.0.0.1:9004"
    )]
    pub order_rpc: String,
    #[arg(
        long = "payment-rpc",
        env = "PAYMENT_RPC",
        value_name = "PAYMENT_RPC",
        default_value = "127.0.0.1:9005"
    )]
    pub payment_rpc: String,
    /// Longest wait for a TCP connection to a service.
    #[arg(long = "rpc-connect-timeout-ms", env = "RPC_CONNECT_TIMEOUT_MS", value_name = "RPC_CONNECT_TIMEOUT_MS", default_value = "1000", value_parser = crate::config::parse_millis)]
    pub connect_timeout: Duration,
    /// Deadline of each call to a service.
    #[arg(long = "rpc-timeout-ms", env = "RPC_TIMEOUT_MS", value_name = "RPC_TIMEOUT_MS", default_value = "3000", value_parser = crate::config::parse_millis)]
    pub call_timeout: Duration,
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

    /// Builds the discovery these settings describe.
    pub fn build(&self) -> Result<Discovery, DiscoveryConfigError> {
        let mut addresses = Vec::new();
        for service in ServiceName::ALL {
            let (setting, list) = self.static_list(service);
            let uris = parse_address_list(list)
                .map_err(|reason| DiscoveryConfigError { setting, reason })?;
            addresses.push((service, uris));
        }
        Ok(Discovery {
            source: Arc::new(StaticSource::new(addresses)),
            connect_timeout: self.connect_timeout,
            call_timeout: self.call_timeout,
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

/// Turns service names into balanced channels.
#[derive(Clone)]
pub struct Discovery {
    source: Arc<dyn EndpointSource>,
    connect_timeout: Duration,
    call_timeout: Duration,
}

impl Discovery {
    pub fn new(
        source: Arc<dyn EndpointSource>,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Self {
        Discovery {
            source,
            connect_timeout,
            call_timeout,
        }
    }

    /// Static addresses, for tests and simple setups.
    pub fn fixed(addresses: Vec<(ServiceName, Vec<Uri>)>) -> Self {
        Discovery::new(
            Arc::new(StaticSource::new(addresses)),
            Duration::from_secs(1),
            Duration::from_secs(3),
        )
    }

    /// A channel to `service`, balanced across its current addresses and following every
    /// change of the set. Connections are made lazily; a call with no address answers
    /// UNAVAILABLE. Must be called inside a tokio runtime.
    pub fn channel(&self, service: ServiceName) -> Channel {
        let (channel, changes) = Channel::balance_channel::<Uri>(16);
        let mut addresses = self.source.watch(service);
        let connect_timeout = self.connect_timeout;
        let call_timeout = self.call_timeout;
        tokio::spawn(async move {
            let mut current: HashSet<Uri> = HashSet::new();
            loop {
                let wanted: HashSet<Uri> = addresses.borrow_and_update().iter().cloned().collect();
                for gone in current.difference(&wanted) {
                    if changes.send(Change::Remove(gone.clone())).await.is_err() {
                        return;
                    }
                }
                for new in wanted.difference(&current) {
                    let endpoint = Endpoint::from(new.clone())
                        .connect_timeout(connect_timeout)
                        .timeout(call_timeout)
                        .tcp_nodelay(true);
                    if changes
                        .send(Change::Insert(new.clone(), endpoint))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                current = wanted;
                if addresses.changed().await.is_err() {
                    // The source is gone; keep the last set for as long as the channel lives.
                    changes.closed().await;
                    return;
                }
            }
        });
        channel
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
}
