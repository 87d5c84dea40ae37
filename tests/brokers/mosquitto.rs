//! Mosquitto over TCP, TLS, mutual TLS, WebSocket and secure WebSocket: one
//! broker with a listener per transport. A config with only a websockets
//! listener does not start ("Unable to start any listening sockets"), so the
//! plain listener is always there; `socket_domain ipv4` keeps the
//! WebSocket listeners off IPv6.

use std::collections::HashMap;
use std::sync::Arc;

use crate::matrix::{Broker as Kind, Transport};
use crate::run::{Control, Subject, USER, run};
use crate::support::{Broker, TempDir, TestPki, free_port};

impl Control for Broker {
    fn kill(&self) {
        Broker::kill(self)
    }
    fn restart(&self) {
        Broker::restart(self)
    }
    fn pause(&self) {
        Broker::pause(self)
    }
    fn resume(&self) {
        Broker::resume(self)
    }
    fn log(&self) -> String {
        Broker::log(self)
    }
}

/// Listener blocks for TLS, mutual TLS, ws and wss beside the fixture's
/// plain one; returns them with each transport's URL.
pub fn listeners(pki: &TestPki) -> (String, HashMap<Transport, u16>) {
    let ports: HashMap<Transport, u16> = [
        Transport::Tls,
        Transport::MutualTls,
        Transport::Ws,
        Transport::Wss,
    ]
    .into_iter()
    .map(|t| (t, free_port()))
    .collect();
    let files = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        pki.ca_pem_path.display(),
        pki.server_cert_path.display(),
        pki.server_key_path.display()
    );
    let config = format!(
        "listener {tls} 127.0.0.1\n{files}\
         listener {mtls} 127.0.0.1\n{files}require_certificate true\n\
         listener {ws}\nsocket_domain ipv4\nprotocol websockets\n\
         listener {wss}\nsocket_domain ipv4\nprotocol websockets\n{files}",
        tls = ports[&Transport::Tls],
        mtls = ports[&Transport::MutualTls],
        ws = ports[&Transport::Ws],
        wss = ports[&Transport::Wss],
    );
    (config, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_over_every_transport() {
    let dir = TempDir::new("matrix-mosquitto");
    let pki = TestPki::generate(&*dir);
    let stranger = TestPki::generate_named(&*dir, "stranger");
    let (config, ports) = listeners(&pki);
    let broker = Broker::builder()
        .password(USER.0, USER.1)
        .extra_config(&config)
        .start();
    let urls = HashMap::from([
        (Transport::Tcp, broker.url()),
        (
            Transport::Tls,
            format!("mqtts://localhost:{}", ports[&Transport::Tls]),
        ),
        (
            Transport::MutualTls,
            format!("mqtts://localhost:{}", ports[&Transport::MutualTls]),
        ),
        (
            Transport::Ws,
            format!("ws://127.0.0.1:{}/mqtt", ports[&Transport::Ws]),
        ),
        (
            Transport::Wss,
            format!("wss://localhost:{}/mqtt", ports[&Transport::Wss]),
        ),
    ]);
    run(Subject {
        broker: Kind::Mosquitto,
        control: Arc::new(broker),
        urls,
        user: USER,
        pki,
        stranger,
    })
    .await;
}
