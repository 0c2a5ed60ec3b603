//! Several "hosts" on one machine: Linux network namespaces joined by a router, for tests that
//! cut, isolate and slow down the network between brokers.
//!
//! A [`NetnsLab`] with `n` hosts is `n + 1` namespaces named `mr-<pid>-<k>-…`:
//!
//! - `mr-<pid>-<k>-rt`, the router, forwarding between its ports;
//! - `mr-<pid>-<k>-h<i>` for each host, with loopback up and `eth0` (a veth pair to the router)
//!   carrying `10.213.<lab>.<i + 1>`;
//! - plus a veth pair from the test's own namespace (`mrlab<lab>`, address `10.213.<lab>.253`)
//!   to the router, so the test process (its clients) reaches every host directly.
//!
//! A router rather than a bridge because faults are then routing rules in one place, with
//! nothing but `iproute2`: a cut is an `ip rule … blackhole` for the forwarded packets between
//! two hosts, which drops them silently (no error reaches either side, as with a pulled cable
//! or a firewall DROP, so clients see timeouts, not refusals), needs no netfilter module, and
//! can be one-way. Delays are `tc netem` on a host's `eth0`, when the kernel has netem.
//!
//! Everything needs root (CI runs as root); without it, or without `ip`, [`NetnsLab::new`]
//! prints `SKIP: …` and returns `None`, and the test returns early. Dropping the lab kills what
//! runs in its namespaces and removes them and its link, also when the test panicked; labs
//! left behind by a killed test process are removed by [`cleanup_stale`].

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};

/// The start of every name this module creates: `mr-<pid>-<k>`.
const PREFIX: &str = "mr-";

/// Labs created by this process so far (the `<k>` of the names).
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Held while a lab is built: parallel tests of one binary then do not race on the first
/// `ip netns add` of a machine (which sets up the shared `/run/netns` mount) or on claiming a
/// subnet.
static BUILDING: Mutex<()> = Mutex::new(());

/// A set of network namespaces, one per host, joined by a router. See the module docs.
pub struct NetnsLab {
    /// `mr-<pid>-<k>`.
    name: String,
    /// The third byte of every address.
    lab: u8,
    hosts: usize,
    /// Namespaces created so far (all of them once `new` returned), removed on drop.
    namespaces: Vec<String>,
    /// The link in the test's namespace, once created.
    root_link: Option<String>,
    /// One-way cuts in force: (from host, to host).
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    /// Hosts cut off from everyone.
    isolated: Mutex<BTreeSet<usize>>,
}

impl std::fmt::Debug for NetnsLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsLab")
            .field("name", &self.name)
            .field("subnet", &format!("10.213.{}.0/24", self.lab))
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Why a lab cannot be made here, if it cannot: not root, or no `ip`.
pub fn unavailable_reason() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => {
            return Some(format!(
                "network namespaces need root (running as uid {uid})"
            ))
        }
        None => return Some("cannot tell the user id (no /proc/self/status)".to_string()),
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip -V` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Some(format!("`ip` (iproute2) is not available: {e}")),
    }
}

/// The effective user id, from `/proc/self/status` (the workspace forbids the `unsafe` a
/// `geteuid` call would take).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Real, effective, saved, filesystem.
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs `ip` with `args`; an error with its stderr if it fails.
fn ip<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    check_output("ip", &args, out)
}

fn check_output(program: &str, args: &[std::ffi::OsString], out: Output) -> anyhow::Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let line: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        bail!(
            "`{program} {}` failed ({}): {}",
            line.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Parses the pid out of a name `mr-<pid>-<k>…`, if it is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let k: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if k.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces and links of labs whose process is gone (a test killed before its
/// lab was dropped). Processes still running inside them are left alone (they are not ours to
/// end) and named on stderr. Returns how many namespaces and links were removed.
pub fn cleanup_stale() -> anyhow::Result<usize> {
    let mut removed = 0;
    for line in ip(["netns", "list"])?.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if owner_pid(name).is_some_and(|pid| !alive(pid)) {
            if let Ok(pids) = ip(["netns", "pids", name]) {
                let pids: Vec<&str> = pids.split_whitespace().collect();
                if !pids.is_empty() {
                    eprintln!("netns: stale namespace {name} still runs pids {pids:?}");
                }
            }
            match ip(["netns", "del", name]) {
                Ok(_) => removed += 1,
                Err(e) => eprintln!("netns: removing stale namespace {name}: {e:#}"),
            }
        }
    }
    for line in ip(["-o", "link", "show"])?.lines() {
        // `7: mrlab12@if6: <...> ... \    alias mr-123-0`
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or_default();
        if !name.starts_with("mrlab") {
            continue;
        }
        let alias = line
            .split("alias ")
            .nth(1)
            .and_then(|a| a.split_whitespace().next());
        if alias.and_then(owner_pid).is_some_and(|pid| !alive(pid)) {
            match ip(["link", "del", name]) {
                Ok(_) => removed += 1,
                Err(e) => eprintln!("netns: removing stale link {name}: {e:#}"),
            }
        }
    }
    Ok(removed)
}

impl NetnsLab {
    /// Creates a lab of `hosts` hosts (1 to 252), or returns `None` after printing
    /// `SKIP: …` when this machine cannot (not root, no `ip`, or namespaces not permitted).
    /// Removes stale labs first.
    pub fn new(hosts: usize) -> anyhow::Result<Option<NetnsLab>> {
        if !(1..=252).contains(&hosts) {
            bail!("a lab has 1 to 252 hosts, not {hosts}");
        }
        if let Some(reason) = unavailable_reason() {
            eprintln!("SKIP: no network namespace lab ({reason})");
            return Ok(None);
        }
        let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = cleanup_stale() {
            eprintln!("netns: cleaning up stale labs: {e:#}");
        }
        let k = LABS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{k}", std::process::id());
        let mut lab = NetnsLab {
            lab: 0,
            hosts,
            namespaces: Vec::new(),
            root_link: None,
            cuts: Mutex::new(BTreeSet::new()),
            isolated: Mutex::new(BTreeSet::new()),
            name,
        };
        // A root without CAP_SYS_ADMIN (some containers) cannot make namespaces: skip too.
        let router = lab.router_ns();
        if let Err(e) = ip(["netns", "add", &router]) {
            let text = format!("{e:#}");
            if text.contains("Operation not permitted") || text.contains("Permission denied") {
                eprintln!("SKIP: no network namespace lab ({text})");
                return Ok(None);
            }
            return Err(e);
        }
        lab.namespaces.push(router.clone());
        // On error from here on, dropping `lab` removes what was made.
        lab.build()?;
        Ok(Some(lab))
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let router = self.router_ns();
        ip(["-n", &router, "link", "set", "lo", "up"])?;
        // The router forwards between its ports.
        let out = Command::new("ip")
            .args(["netns", "exec", &router, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv4/ip_forward")
            .output()
            .context("running ip netns exec")?;
        check_output("ip netns exec", &[router.clone().into()], out)
            .context("enabling forwarding in the router")?;
        self.claim_subnet()?;
        let gateway = self.gateway_addr().to_string();
        let root_link = self.root_link.clone().unwrap_or_default();
        // The test's own namespace: the link's far end is the router's port `root`.
        ip(["link", "set", "dev", &root_link, "alias", &self.name])?;
        ip([
            "addr",
            "add",
            &format!("{}/32", self.client_addr()),
            "dev",
            &root_link,
        ])?;
        ip(["link", "set", &root_link, "up"])?;
        ip([
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/32"),
            "dev",
            "root",
        ])?;
        ip(["-n", &router, "link", "set", "root", "up"])?;
        ip([
            "-n",
            &router,
            "route",
            "add",
            &format!("{}/32", self.client_addr()),
            "dev",
            "root",
        ])?;
        ip([
            "route",
            "add",
            &format!("10.213.{}.0/24", self.lab),
            "via",
            &gateway,
            "dev",
            &root_link,
            "onlink",
        ])?;
        for i in 0..self.hosts {
            let host = self.host_ns(i);
            ip(["netns", "add", &host])?;
            self.namespaces.push(host.clone());
            let port = format!("h{i}");
            let addr = self.host_addr(i).to_string();
            ip([
                "-n", &router, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &host,
            ])?;
            ip(["-n", &host, "link", "set", "lo", "up"])?;
            ip([
                "-n",
                &host,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            ip(["-n", &host, "link", "set", "eth0", "up"])?;
            ip([
                "-n",
                &router,
                "addr",
                "add",
                &format!("{gateway}/32"),
                "dev",
                &port,
            ])?;
            ip(["-n", &router, "link", "set", &port, "up"])?;
            ip([
                "-n",
                &router,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &port,
            ])?;
            ip([
                "-n", &host, "route", "add", "default", "via", &gateway, "dev", "eth0", "onlink",
            ])?;
        }
        Ok(())
    }

    /// Picks a free `10.213.<lab>.0/24`: creating the link `mrlab<lab>` is the claim (link
    /// names are unique in a namespace, so two test processes cannot both get one).
    fn claim_subnet(&mut self) -> anyhow::Result<()> {
        let start = (std::process::id() as usize).wrapping_mul(31) + LABS.load(Ordering::Relaxed);
        let router = self.router_ns();
        for attempt in 0..256 {
            let lab = ((start + attempt) % 256) as u8;
            let link = format!("mrlab{lab}");
            // Someone else (not a lab) uses the subnet: leave it.
            let used = ip([
                "-4",
                "-o",
                "addr",
                "show",
                "to",
                &format!("10.213.{lab}.0/24"),
            ])?;
            if !used.trim().is_empty() {
                continue;
            }
            match ip([
                "link", "add", &link, "type", "veth", "peer", "name", "root", "netns", &router,
            ]) {
                Ok(_) => {
                    self.lab = lab;
                    self.root_link = Some(link);
                    return Ok(());
                }
                Err(e) if format!("{e:#}").contains("File exists") => continue,
                Err(e) => return Err(e),
            }
        }
        bail!("no free 10.213.x.0/24 for a lab")
    }

    /// `mr-<pid>-<k>`: the start of every namespace name of this lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The router's namespace.
    pub fn router_ns(&self) -> String {
        format!("{}-rt", self.name)
    }

    /// Host `i`'s namespace.
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.name)
    }

    /// Host `i`'s address.
    pub fn host_addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.hosts, "host {i} of a {}-host lab", self.hosts);
        Ipv4Addr::new(10, 213, self.lab, i as u8 + 1)
    }

    /// The test process's address in the lab (where clients in the test connect from).
    pub fn client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.lab, 253)
    }

    fn gateway_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.lab, 254)
    }

    /// A command that runs `program` inside host `i`'s namespace (`ip netns exec`), for the
    /// caller to add arguments and stdio to. `ip netns exec` replaces itself with the program,
    /// so the child's pid is the program's.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        assert!(i < self.hosts, "host {i} of a {}-host lab", self.hosts);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host_ns(i)])
            .arg(program);
        command
    }

    /// Starts `command` (program, arguments, environment and directory) inside host `i`'s
    /// namespace, with stdin closed and stdout and stderr inherited (use [`NetnsLab::command`]
    /// to choose stdio). Whatever still runs in the lab is killed when the lab is dropped.
    pub fn spawn(&self, i: usize, command: &Command) -> std::io::Result<Child> {
        let mut inner = self.command(i, command.get_program());
        inner.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => inner.env(key, value),
                None => inner.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            inner.current_dir(dir);
        }
        inner.stdin(Stdio::null()).spawn()
    }

    /// True if a TCP connection from host `from` to `to` is accepted within `timeout` (run
    /// inside the namespace with bash's `/dev/tcp` under `timeout`).
    pub fn connects(&self, from: usize, to: SocketAddr, timeout: Duration) -> bool {
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let script = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
        self.command(from, "timeout")
            .args([&secs, "bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn rule(&self, verb: &str, selector: &[String]) -> anyhow::Result<()> {
        let router = self.router_ns();
        let mut args: Vec<String> = vec!["-n".into(), router, "rule".into(), verb.into()];
        args.extend(selector.iter().cloned());
        args.push("blackhole".into());
        ip(args).map(|_| ())
    }

    /// Drops every packet from host `from` to host `to` (one way: answers from `to` still
    /// flow, but TCP needs both ways, so connections fail either way).
    pub fn cut_one_way(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        if cuts.insert((from, to)) {
            let selector = [
                "from".to_string(),
                self.host_addr(from).to_string(),
                "to".to_string(),
                self.host_addr(to).to_string(),
            ];
            self.rule("add", &selector)?;
        }
        Ok(())
    }

    /// Undoes [`NetnsLab::cut_one_way`].
    pub fn heal_one_way(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        if cuts.remove(&(from, to)) {
            let selector = [
                "from".to_string(),
                self.host_addr(from).to_string(),
                "to".to_string(),
                self.host_addr(to).to_string(),
            ];
            self.rule("del", &selector)?;
        }
        Ok(())
    }

    /// Drops every packet between hosts `i` and `j`, both ways. Silent: senders see no error,
    /// only timeouts. Both can still reach the other hosts and the test process.
    pub fn cut(&self, i: usize, j: usize) -> anyhow::Result<()> {
        self.cut_one_way(i, j)?;
        self.cut_one_way(j, i)
    }

    /// Undoes [`NetnsLab::cut`].
    pub fn heal(&self, i: usize, j: usize) -> anyhow::Result<()> {
        self.heal_one_way(i, j)?;
        self.heal_one_way(j, i)
    }

    /// Splits the hosts into two sides: every pair across is cut.
    pub fn partition(&self, side: &[usize]) -> anyhow::Result<()> {
        for i in side {
            for j in (0..self.hosts).filter(|j| !side.contains(j)) {
                self.cut(*i, j)?;
            }
        }
        Ok(())
    }

    /// Cuts host `i` off from everyone: the other hosts and the test process.
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        let mut isolated = self.isolated.lock().unwrap_or_else(|p| p.into_inner());
        if isolated.insert(i) {
            let addr = self.host_addr(i).to_string();
            self.rule("add", &["from".into(), addr.clone()])?;
            self.rule("add", &["to".into(), addr])?;
        }
        Ok(())
    }

    /// Undoes [`NetnsLab::isolate`].
    pub fn rejoin(&self, i: usize) -> anyhow::Result<()> {
        let mut isolated = self.isolated.lock().unwrap_or_else(|p| p.into_inner());
        if isolated.remove(&i) {
            let addr = self.host_addr(i).to_string();
            self.rule("del", &["from".into(), addr.clone()])?;
            self.rule("del", &["to".into(), addr])?;
        }
        Ok(())
    }

    /// Undoes every cut, partition and isolation.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        let cuts: Vec<(usize, usize)> = self
            .cuts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for (from, to) in cuts {
            self.heal_one_way(from, to)?;
        }
        let isolated: Vec<usize> = self
            .isolated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for i in isolated {
            self.rejoin(i)?;
        }
        Ok(())
    }

    /// Delays every packet host `i` sends by `ms` milliseconds (`tc netem` on its `eth0`).
    /// `Ok(false)`, after a `SKIP:` line on stderr, when `tc` or the kernel's netem is missing.
    pub fn delay(&self, i: usize, ms: u32) -> anyhow::Result<bool> {
        let host = self.host_ns(i);
        let out = match Command::new("ip")
            .args([
                "netns", "exec", &host, "tc", "qdisc", "replace", "dev", "eth0",
            ])
            .args(["root", "netem", "delay", &format!("{ms}ms")])
            .output()
        {
            Ok(out) => out,
            Err(e) => bail!("running ip netns exec: {e}"),
        };
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // "Specified qdisc kind is unknown" (no netem in the kernel), or no `tc` to exec.
        if stderr.contains("unknown") || stderr.contains("No such file") {
            eprintln!(
                "SKIP: no delay on host {i} (tc netem unavailable: {})",
                stderr.trim()
            );
            return Ok(false);
        }
        bail!("tc netem on host {i} failed: {}", stderr.trim())
    }

    /// Removes host `i`'s delay.
    pub fn clear_delay(&self, i: usize) -> anyhow::Result<()> {
        let host = self.host_ns(i);
        // Nothing to remove is fine.
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &host, "tc", "qdisc", "del", "dev", "eth0", "root",
            ])
            .stderr(Stdio::null())
            .status();
        Ok(())
    }

    /// The pids running in the lab's namespaces.
    pub fn pids(&self) -> Vec<u32> {
        self.namespaces
            .iter()
            .filter_map(|ns| ip(["netns", "pids", ns]).ok())
            .flat_map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        // Processes inside were started in this lab (by `spawn`/`command`): a namespace is
        // only gone once they are, and a broker left running would hold its ports.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        // The root link first and explicitly: namespace teardown is asynchronous, and the
        // next lab may want the name.
        if let Some(link) = self.root_link.take() {
            if let Err(e) = ip(["link", "del", &link]) {
                eprintln!("netns: removing {link}: {e:#}");
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(["netns", "del", &ns]) {
                eprintln!("netns: removing {ns}: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn only_our_names_have_an_owner() {
        assert_eq!(owner_pid("mr-123-0-rt"), Some(123));
        assert_eq!(owner_pid("mr-123-4-h2"), Some(123));
        assert_eq!(owner_pid("mr-123-4"), Some(123));
        assert_eq!(owner_pid("mr-x-rt"), None);
        assert_eq!(owner_pid("mr-123-rt"), None);
        assert_eq!(owner_pid("other-123-0"), None);
    }
}
