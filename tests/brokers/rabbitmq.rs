//! RabbitMQ's MQTT plugin (TCP, TLS) and Web MQTT plugin (ws, wss at `/ws`):
//! one private node, booted once for this binary.

use std::collections::HashMap;
use std::sync::Arc;

use crate::matrix::{Broker as Kind, Transport};
use crate::run::{Control, Subject, USER, run};
use crate::support::broker::process_state;
use crate::support::rabbitmq::RabbitMq;
use crate::support::{TempDir, TestPki, pid_exists};

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

/// Pids of the Erlang VMs running now (the machine's own RabbitMQ, say).
fn erlang_vms() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "beam.smp")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_every_transport() {
    // Every signal goes to our node's pid: any other Erlang VM (the
    // machine's own RabbitMQ on 5672) lives through the kill and the freeze.
    let others = erlang_vms();
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
    let ours = node.pid();
    run(Subject {
        broker: Kind::RabbitMq,
        control: Arc::new(node),
        urls,
        user: USER,
        pki,
        stranger,
    })
    .await;
    for pid in others {
        assert_ne!(pid, ours);
        assert!(
            pid_exists(pid) && process_state(pid) != Some('T'),
            "Erlang VM {pid}, not ours, was killed or left stopped"
        );
    }
}
