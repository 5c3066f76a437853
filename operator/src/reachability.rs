//! Whether the operator reaches each external middleware: a TCP connection to one of its
//! addresses, within a few seconds. It says the name resolves and something listens; whether
//! the credentials are right, the services' readiness tells.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::TcpStream;

use crate::manifests::external::Dependency;

/// How long one address may take to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One dependency's answer, as its status condition says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reachability {
    pub condition: &'static str,
    pub reachable: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Probes every dependency at once; each tries its addresses in turn until one accepts.
pub async fn probe_all(dependencies: &[Dependency]) -> Vec<Reachability> {
    join_all(dependencies.iter().map(probe)).await
}

async fn probe(dependency: &Dependency) -> Reachability {
    let (reachable, reason, message) = match &dependency.addresses {
        Err(why) => (false, "AddressUnknown", why.clone()),
        Ok(addresses) if addresses.is_empty() => {
            (false, "AddressUnknown", "no address is given".to_owned())
        }
        Ok(addresses) => match first_answering(addresses).await {
            Ok(address) => (true, "Connected", format!("{address} accepts connections")),
            Err(failures) => (false, "Unreachable", failures.join("; ")),
        },
    };
    Reachability {
        condition: dependency.condition,
        reachable,
        reason,
        message,
    }
}

async fn first_answering(addresses: &[String]) -> Result<String, Vec<String>> {
    let mut failures = Vec::new();
    for address in addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address.as_str())).await {
            Ok(Ok(_)) => return Ok(address.clone()),
            Ok(Err(error)) => failures.push(format!("{address}: {error}")),
            Err(_) => failures.push(format!(
                "{address}: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }
    Err(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_address_is_reached_and_a_closed_one_is_named() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let closed = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().to_string()
        };
        let seen = probe_all(&[
            Dependency {
                condition: "KafkaReachable",
                addresses: Ok(vec![closed.clone(), open.clone()]),
            },
            Dependency {
                condition: "RedisReachable",
                addresses: Ok(vec![closed.clone()]),
            },
            Dependency {
                condition: "PostgresReachable",
                addresses: Err("Secret pg not found".into()),
            },
        ])
        .await;
        assert_eq!(
            (seen[0].reachable, seen[0].reason, seen[0].message.clone()),
            (true, "Connected", format!("{open} accepts connections"))
        );
        assert!(!seen[1].reachable && seen[1].reason == "Unreachable");
        assert!(seen[1].message.starts_with(&closed), "{}", seen[1].message);
        assert_eq!(
            (seen[2].reachable, seen[2].reason),
            (false, "AddressUnknown")
        );
    }
}
