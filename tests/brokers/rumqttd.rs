//! rumqttd over TCP, TLS, ws and wss, as its own process
//! (`examples/rumqttd_broker.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::matrix::{Broker as Kind, Transport};
use crate::run::{Control, Subject, USER, run};
use crate::support::rumqttd::Rumqttd;
use crate::support::{TempDir, TestPki};

impl Control for Rumqttd {
    fn kill(&self) {
        Rumqttd::kill(self)
    }
    fn restart(&self) {
        Rumqttd::restart(self)
    }
    fn pause(&self) {
        Rumqttd::pause(self)
    }
    fn resume(&self) {
        Rumqttd::resume(self)
    }
    fn log(&self) -> String {
        Rumqttd::log(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttd_over_every_transport() {
    let dir = TempDir::new("matrix-rumqttd");
    let pki = TestPki::generate(&*dir);
    let stranger = TestPki::generate_named(&*dir, "stranger");
    let files = pki.server_files();
    let broker = tokio::task::spawn_blocking(move || {
        Rumqttd::builder()
            .password(USER.0, USER.1)
            .tls(files)
            .start()
    })
    .await
    .unwrap();
    let urls = HashMap::from([
        (Transport::Tcp, broker.mqtt_url()),
        (Transport::Tls, broker.mqtts_url()),
        (Transport::Ws, broker.ws_url()),
        (Transport::Wss, broker.wss_url()),
    ]);
    run(Subject {
        broker: Kind::Rumqttd,
        control: Arc::new(broker),
        urls,
        user: USER,
        pki,
        stranger,
    })
    .await;
}
