//! etcd: each instance registers its address under a lease it keeps alive; clients watch the
//! prefix. An instance that stops gracefully revokes its lease and leaves at once; one that dies
//! leaves when its lease expires (the TTL).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;
use tonic::transport::Uri;

use super::{EndpointSource, ServiceName, parse_address_list};
use crate::shutdown::Shutdown;

/// Watches the registrations under `prefix` (e.g. `/letsgo/services/`).
pub struct EtcdSource {
    client: Client,
    prefix: String,
    sets: Mutex<HashMap<ServiceName, watch::Sender<Vec<Uri>>>>,
}

fn service_prefix(prefix: &str, service: ServiceName) -> String {
    format!("{prefix}{}/", service.as_str())
}

impl EtcdSource {
    pub fn new(client: Client, prefix: &str) -> Self {
        EtcdSource {
            client,
            prefix: prefix.to_owned(),
            sets: Mutex::new(HashMap::new()),
        }
    }
}

impl EndpointSource for EtcdSource {
    fn watch(&self, service: ServiceName) -> watch::Receiver<Vec<Uri>> {
        let mut sets = self.sets.lock().expect("etcd sets lock");
        if let Some(sender) = sets.get(&service) {
            return sender.subscribe();
        }
        let sender = watch::Sender::new(Vec::new());
        tokio::spawn(follow(
            self.client.clone(),
            service_prefix(&self.prefix, service),
            sender.clone(),
        ));
        let receiver = sender.subscribe();
        sets.insert(service, sender);
        receiver
    }
}

/// Publishes the set; `always` notifies even when nothing changed (the first answer, which
/// tells waiting callers that an empty set really is empty).
fn publish(sender: &watch::Sender<Vec<Uri>>, registered: &BTreeMap<String, Uri>, always: bool) {
    let set: Vec<Uri> = registered.values().cloned().collect();
    sender.send_if_modified(|current| {
        let changed = *current != set;
        *current = set;
        changed || always
    });
}

fn parse_value(value: &[u8]) -> Option<Uri> {
    let text = std::str::from_utf8(value).ok()?;
    parse_address_list(text).ok()?.into_iter().next()
}

/// Reads the prefix, then follows its changes; starts over after any error.
async fn follow(mut client: Client, prefix: String, sender: watch::Sender<Vec<Uri>>) {
    let mut first = true;
    loop {
        match client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
        {
            Ok(current) => {
                let mut registered: BTreeMap<String, Uri> = current
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        Some((kv.key_str().ok()?.to_owned(), parse_value(kv.value())?))
                    })
                    .collect();
                publish(&sender, &registered, first);
                first = false;
                let revision = current
                    .header()
                    .map(|header| header.revision())
                    .unwrap_or(0);
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1);
                match client.watch(prefix.as_str(), Some(options)).await {
                    Ok(mut stream) => loop {
                        match stream.message().await {
                            Ok(Some(changes)) => {
                                for event in changes.events() {
                                    let Some(kv) = event.kv() else { continue };
                                    let Ok(key) = kv.key_str() else { continue };
                                    match event.event_type() {
                                        EventType::Put => {
                                            if let Some(uri) = parse_value(kv.value()) {
                                                registered.insert(key.to_owned(), uri);
                                            }
                                        }
                                        EventType::Delete => {
                                            registered.remove(key);
                                        }
                                    }
                                }
                                publish(&sender, &registered, false);
                            }
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%error, %prefix, "etcd watch broke; starting over");
                                break;
                            }
                        }
                    },
                    Err(error) => tracing::warn!(%error, %prefix, "etcd watch failed"),
                }
            }
            Err(error) => tracing::warn!(%error, %prefix, "etcd read failed"),
        }
        if sender.receiver_count() == 0 && sender.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Registers `address` for `service` under a lease of `ttl`, keeps it alive until `shutdown`,
/// then revokes it so the instance leaves at once. If the lease is lost (etcd away longer than
/// the TTL), it registers again.
pub async fn register(
    mut client: Client,
    prefix: &str,
    service: ServiceName,
    address: String,
    ttl: Duration,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, etcd_client::Error> {
    let key = format!("{}{address}", service_prefix(prefix, service));
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let mut lease = grant_and_put(&mut client, &key, &address, ttl_secs).await?;
    Ok(tokio::spawn(async move {
        let mut keeper = client.lease_keep_alive(lease).await.ok();
        let mut tick = tokio::time::interval(Duration::from_secs((ttl_secs as u64 / 3).max(1)));
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            let alive = match keeper.as_mut() {
                Some((keeper, responses)) => {
                    keeper.keep_alive().await.is_ok()
                        && matches!(responses.message().await, Ok(Some(response)) if response.ttl() > 0)
                }
                None => false,
            };
            if !alive {
                tracing::warn!(%key, "etcd lease lost; registering again");
                match grant_and_put(&mut client, &key, &address, ttl_secs).await {
                    Ok(new_lease) => {
                        lease = new_lease;
                        keeper = client.lease_keep_alive(lease).await.ok();
                    }
                    Err(error) => tracing::warn!(%error, "etcd registration failed; retrying"),
                }
            }
        }
        if let Err(error) = client.lease_revoke(lease).await {
            tracing::warn!(%error, %key, "could not deregister; the lease will expire");
        } else {
            tracing::info!(%key, "deregistered from etcd");
        }
    }))
}

async fn grant_and_put(
    client: &mut Client,
    key: &str,
    address: &str,
    ttl_secs: i64,
) -> Result<i64, etcd_client::Error> {
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    client
        .put(key, address, Some(PutOptions::new().with_lease(lease)))
        .await?;
    tracing::info!(%key, ttl_secs, "registered in etcd");
    Ok(lease)
}
