//! Binding `--web.listen-address` values the way Prometheus exporters read them.
//!
//! It owns address parsing (`host:port`, `:port`) and the IPv6/IPv4 fallback;
//! it must never serve: the HTTP layer does.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpListener;

use super::DaemonError;

/// Binds `host:port`, or `:port` on every interface (IPv6 and IPv4 where the
/// machine has IPv6, else IPv4).
pub(super) async fn bind(address: &str) -> Result<TcpListener, DaemonError> {
    let invalid = |reason: String| DaemonError::ListenAddress {
        address: address.to_owned(),
        reason,
    };
    let listen_error = |source| DaemonError::Listen {
        address: address.to_owned(),
        source,
    };
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(format!("{port:?} is not a port number")))?;
        return match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
            Ok(listener) => Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(listen_error(e)),
            // No IPv6 on this machine: all IPv4 interfaces then.
            Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .await
                .map_err(listen_error),
        };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid("expected host:port or :port".into()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid("expected host:port or :port".into()));
    }
    let mut resolved = tokio::net::lookup_host(address)
        .await
        .map_err(|e| invalid(format!("cannot resolve the host: {e}")))?;
    let Some(socket_address) = resolved.next() else {
        return Err(invalid("the host resolves to no address".into()));
    };
    TcpListener::bind(socket_address)
        .await
        .map_err(listen_error)
}
