//! RabbitMQ's MQTT plugin (TCP, TLS) and Web MQTT plugin (ws, wss at `/ws`):
//! one private node, booted once for this binary.

use std::collections::HashMap;
use std::sync::Arc;

use crate::matrix::{Broker as Kind, Transport};
use crate::run::{Control, Subject, USER, run};
use crate::support::rabbitmq::RabbitMq;
use crate::support::{TempDir, TestPki};

impl Control for RabbitMq {
    fn kill(&self) {
        RabbitMq::kill(self)
    }
    fn restart(&self) {
        RabbitMq::restart(self)
    }
    fn pause(&self) {
        RabbitMq::pause(self)
    }
    fn resume(&self) {
        RabbitMq::resume(self)
    }
    fn log(&self) -> String {
        RabbitMq::log(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_every_transport() {
    let dir = TempDir::new("matrix-rabbitmq");
    let pki = TestPki::generate(&*dir);
    let stranger = TestPki::generate_named(&*dir, "stranger");
    let files = pki.server_files();
    let node = tokio::task::spawn_blocking(move || {
        RabbitMq::builder()
            .password(USER.0, USER.1)
            .tls(files)
            .start()
    })
    .await
    .unwrap();
    let urls = HashMap::from([
        (Transport::Tcp, node.mqtt_url()),
        (Transport::Tls, node.mqtts_url()),
        (Transport::Ws, node.ws_url()),
        (Transport::Wss, node.wss_url()),
    ]);
    run(Subject {
        broker: Kind::RabbitMq,
        control: Arc::new(node),
        urls,
        user: USER,
        pki,
        stranger,
    })
    .await;
}
