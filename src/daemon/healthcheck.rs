//! The `healthcheck` subcommand: `GET /-/healthy` on a running daemon.
//!
//! It owns one request to this machine's own mqtt-pulse and its verdict; it
//! must never be used to reach another machine (it skips certificate checks).

use super::DaemonError;

/// `GET /-/healthy` on the daemon listening at `address` (`:port` and
/// wildcard hosts mean this machine), over TLS if `tls`. A dozen lines of
/// HTTP/1.1 by hand keep an HTTP client library out of the binary for one
/// request to loopback.
pub(super) fn healthcheck(address: &str, tls: bool) -> Result<(), DaemonError> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let unhealthy = |reason: String| DaemonError::Unhealthy {
        address: address.to_owned(),
        reason,
    };
    let target = match address.rsplit_once(':') {
        Some(("" | "0.0.0.0" | "[::]", port)) => format!("127.0.0.1:{port}"),
        _ => address.to_owned(),
    };
    let socket = target
        .to_socket_addrs()
        .map_err(|e| unhealthy(e.to_string()))?
        .next()
        .ok_or_else(|| unhealthy("the address resolves to nothing".into()))?;
    let timeout = Duration::from_secs(3);
    let tcp = TcpStream::connect_timeout(&socket, timeout).map_err(|e| unhealthy(e.to_string()))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let mut stream: Box<dyn ReadWrite> = if tls {
        // The server is this machine's own mqtt-pulse: which certificate it
        // shows is not the question, whether it answers is.
        let config = crate::connection::TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        }
        .client_config()
        .map_err(|e| unhealthy(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|e| unhealthy(e.to_string()))?;
        let connection =
            rustls::ClientConnection::new(config, name).map_err(|e| unhealthy(e.to_string()))?;
        Box::new(rustls::StreamOwned::new(connection, tcp))
    } else {
        Box::new(tcp)
    };
    let request = format!("GET /-/healthy HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unhealthy(e.to_string()))?;
    let mut response = Vec::new();
    // A TLS server may close without close_notify; what was read still counts.
    if let Err(error) = stream.read_to_end(&mut response)
        && response.is_empty()
    {
        return Err(unhealthy(error.to_string()));
    }
    let status_line = String::from_utf8_lossy(&response);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(unhealthy(format!("answered {status_line:?}")))
    }
}

/// A byte stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
