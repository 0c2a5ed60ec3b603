//! The network namespace lab on this machine (as root; otherwise each test prints SKIP and
//! returns): hosts reach each other until cut or isolated, heal, and leave nothing behind.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use millrace_testkit::netns::{cleanup_stale, NetnsLab};

/// Set in the environment of this test binary when it runs as the listener inside a host.
const LISTEN_ON: &str = "MILLRACE_NETNS_TEST_LISTEN_ON";

/// Not a test on its own: when this binary is started inside a namespace with `LISTEN_ON`
/// set, this is the TCP listener the lab tests connect to (a Rust listener, so the tests need
/// no Python or netcat). Without the variable it returns at once.
#[test]
fn listener_inside_a_namespace() {
    let Ok(addr) = std::env::var(LISTEN_ON) else {
        return;
    };
    let listener = std::net::TcpListener::bind(&addr).unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    for stream in listener.incoming() {
        drop(stream);
    }
}

/// Starts the listener in host `i` and returns it with its address.
fn listen_in(lab: &NetnsLab, i: usize) -> (Child, SocketAddr) {
    let mut child = lab
        .command(i, std::env::current_exe().unwrap())
        .args(["--exact", "listener_inside_a_namespace", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(LISTEN_ON, format!("{}:0", lab.host_addr(i)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest prints `test <name> ... ` first, on the same line.
        .find_map(|line| {
            line.split_once("listening on ")
                .map(|(_, addr)| addr.trim().to_string())
        })
        .expect("the listener starts")
        .parse()
        .unwrap();
    (child, addr)
}

fn test_process_connects(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const UP: Duration = Duration::from_secs(3);
const DOWN: Duration = Duration::from_millis(700);

#[test]
fn hosts_reach_each_other_until_cut_or_isolated_and_after_healing() {
    let Some(lab) = NetnsLab::new(2).unwrap() else {
        return;
    };
    let name = lab.name().to_string();
    assert!(namespaces().contains(&lab.host_ns(1)));
    let (mut listener, addr) = listen_in(&lab, 1);
    assert_eq!(addr.ip(), lab.host_addr(1));

    assert!(lab.connects(0, addr, UP), "host 0 reaches host 1");
    assert!(test_process_connects(addr, UP), "the test reaches host 1");

    lab.cut(0, 1).unwrap();
    assert!(!lab.connects(0, addr, DOWN), "host 0 is cut from host 1");
    assert!(
        test_process_connects(addr, UP),
        "a cut between two hosts leaves the test's link alone"
    );
    lab.heal(0, 1).unwrap();
    assert!(lab.connects(0, addr, UP), "healed");

    // One way is enough to stop TCP: the SYN-ACK does not come back.
    lab.cut_one_way(1, 0).unwrap();
    assert!(!lab.connects(0, addr, DOWN));
    lab.heal_all().unwrap();
    assert!(lab.connects(0, addr, UP));

    lab.isolate(1).unwrap();
    assert!(!lab.connects(0, addr, DOWN), "isolated from host 0");
    assert!(!test_process_connects(addr, DOWN), "isolated from the test");
    lab.rejoin(1).unwrap();
    assert!(lab.connects(0, addr, UP), "rejoined");
    assert!(test_process_connects(addr, UP));

    // A delay on host 1 holds back its SYN-ACK (where the kernel has netem).
    if lab.delay(1, 150).unwrap() {
        let start = Instant::now();
        assert!(test_process_connects(addr, UP));
        assert!(start.elapsed() >= Duration::from_millis(150));
        lab.clear_delay(1).unwrap();
    }

    drop(lab);
    // The lab killed the listener running inside it.
    let status = listener.wait().unwrap();
    assert!(!status.success());
    let left = namespaces();
    assert!(!left.contains(&name), "namespaces left behind: {left}");
    assert!(!links().contains(&name), "links left behind");
}

#[test]
fn a_panicking_test_leaves_no_lab_behind() {
    if NetnsLab::new(1).unwrap().is_none() {
        return;
    }
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lab = NetnsLab::new(3).unwrap().unwrap();
        *name.lock().unwrap() = lab.name().to_string();
        assert!(namespaces().contains(&lab.host_ns(2)));
        panic!("the test fails with its lab up");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    assert!(!namespaces().contains(&name), "{}", namespaces());
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    if NetnsLab::new(1).unwrap().is_none() {
        return;
    }
    // A pid that was ours and is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = format!("mr-{}-0-rt", gone.id());
    let ok = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(ok.success());
    // And a lab's link in the test's namespace (named outside the 0-255 a lab claims).
    let link = format!("mrlab{}", 1000 + gone.id() % 1000);
    let ip = |args: &[&str]| Command::new("ip").args(args).status().unwrap().success();
    assert!(ip(&[
        "link",
        "add",
        &link,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{link}p")
    ]));
    assert!(ip(&[
        "link",
        "set",
        "dev",
        &link,
        "alias",
        &format!("mr-{}-0", gone.id())
    ]));
    assert!(cleanup_stale().unwrap() >= 2);
    assert!(!namespaces().contains(&stale));
    assert!(!links().contains(&format!(": {link}@")), "{}", links());
}

/// With `MILLRACE_BIN` set and as root: a real broker inside a lab host serves the test's
/// client over the lab's router; isolated, it cannot be reached; rejoined, it serves again.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_in_a_lab_host_is_reached_until_isolated() {
    let Some(binary) = millrace_testkit::cluster::ClusterProcesses::binary_from_env() else {
        return;
    };
    let Some(lab) = NetnsLab::new(1).unwrap() else {
        return;
    };
    let dir = millrace_testkit::temp_dir();
    let addr = SocketAddr::new(lab.host_addr(0).into(), 9092);
    let mut broker = lab
        .command(0, &binary)
        .args(["broker", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = broker.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    assert!(
        lines.any(|l| l.contains("broker listening")),
        "the broker starts in the lab"
    );
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let client = millrace_client::ClientConfig::builder([addr.to_string()])
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    millrace_testkit::create_topic(&client, "lab", 1).await;
    let producer = |timeout_ms: u64| {
        millrace_client::ProducerConfig::builder(client.clone())
            .delivery_timeout_ms(timeout_ms)
            .build()
            .unwrap()
    };
    let send = |timeout_ms: u64, value: &'static str| {
        let config = producer(timeout_ms);
        async move {
            let producer = millrace_client::Producer::connect(config).await?;
            let delivery = producer
                .send(millrace_client::ProducerRecord::new("lab", value))
                .await?;
            delivery.await
        }
    };
    assert_eq!(send(10_000, "before").await.unwrap().offset, 0);

    lab.isolate(0).unwrap();
    assert!(
        send(3_000, "isolated").await.is_err(),
        "an isolated broker acknowledges nothing"
    );
    lab.rejoin(0).unwrap();
    let after = send(30_000, "after").await.unwrap();
    assert!(after.offset >= 1, "{after:?}");
    drop(lab);
    broker.wait().unwrap();
}
