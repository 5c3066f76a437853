//! Binding the listeners: every interface of both address families by default.
//!
//! A listener's default address is `[::]`, which on Linux also takes IPv4 connections (a
//! dual-stack socket, unless the host sets net.ipv6.bindv6only), so the same binary serves an
//! IPv4, an IPv6-only and a dual-stack cluster. A host without IPv6 at all gets `0.0.0.0`
//! instead. An address given explicitly is bound as it is.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpListener;

/// Every interface, both families where the host has IPv6: the default of every listener.
pub fn any(port: u16) -> SocketAddr {
    (Ipv6Addr::UNSPECIFIED, port).into()
}

/// Binds `addr`; `[::]` falls back to `0.0.0.0` on a host without IPv6.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(error) if addr.ip() == Ipv6Addr::UNSPECIFIED && no_ipv6(&error) => {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        result => result,
    }
}

/// The errors of a host whose kernel has IPv6 off or absent.
fn no_ipv6(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc_codes::EAFNOSUPPORT | libc_codes::EADDRNOTAVAIL)
    )
}

mod libc_codes {
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const EAFNOSUPPORT: i32 = 97;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_listener_takes_ipv4_and_ipv6() {
        let listener = bind(any(0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listener.local_addr().unwrap().is_ipv6());
        for client in [
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ] {
            let connect = tokio::net::TcpStream::connect(client);
            let (stream, accepted) = tokio::join!(connect, listener.accept());
            stream.unwrap_or_else(|error| panic!("{client}: {error}"));
            accepted.unwrap();
        }
    }

    #[tokio::test]
    async fn an_explicit_address_is_bound_as_given() {
        let listener = bind((Ipv4Addr::LOCALHOST, 0).into()).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
    }
}
