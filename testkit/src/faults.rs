//! Process and disk faults: kill -9, pause and resume with SIGSTOP/SIGCONT, a bit flipped or a
//! tail cut off in a file.
//!
//! Signals go through the `kill` command: the workspace forbids `unsafe` (which `libc::kill`
//! needs) and has no `nix`.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{bail, Context};

/// Sends `signal` (a name such as `STOP`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let out = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running kill")?;
    if !out.status.success() {
        bail!(
            "kill -{signal} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// SIGKILL, then waits for the exit: a crash with no chance to flush or say goodbye.
pub fn kill9(child: &mut Child) -> anyhow::Result<ExitStatus> {
    // An already-exited child makes `kill` fail; `wait` still reports how it ended.
    let _ = child.kill();
    child.wait().context("waiting for the killed process")
}

/// SIGSTOP: the process freezes mid-step (a long GC pause, a VM stall); its sockets stay open
/// and the kernel keeps accepting connections for it.
pub fn sigstop(pid: u32) -> anyhow::Result<()> {
    signal(pid, "STOP")
}

/// SIGCONT: a process stopped with [`sigstop`] carries on where it was.
pub fn sigcont(pid: u32) -> anyhow::Result<()> {
    signal(pid, "CONT")
}

/// SIGTERM: a clean shutdown request.
pub fn sigterm(pid: u32) -> anyhow::Result<()> {
    signal(pid, "TERM")
}

/// A process paused with SIGSTOP until this is dropped (or [`Paused::resume`]d): a test that
/// panics while a broker is paused does not leave it frozen.
#[derive(Debug)]
pub struct Paused {
    pid: u32,
    resumed: bool,
}

impl Paused {
    /// Pauses `pid`.
    pub fn new(pid: u32) -> anyhow::Result<Paused> {
        sigstop(pid)?;
        Ok(Paused {
            pid,
            resumed: false,
        })
    }

    /// Resumes the process now.
    pub fn resume(mut self) -> anyhow::Result<()> {
        self.resumed = true;
        sigcont(self.pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = sigcont(self.pid);
        }
    }
}

/// The state letter of `pid` from `/proc/<pid>/stat` (`T` stopped, `S` sleeping, `R`
/// running, `Z` zombie); `None` once it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: comm may hold spaces and parentheses, so look after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Flips bit `bit` (0 to 7) of the byte at `offset` of `path`: silent disk corruption.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) -> anyhow::Result<()> {
    if bit > 7 {
        bail!("bit {bit} of a byte");
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)
        .with_context(|| format!("reading byte {offset} of {}", path.display()))?;
    byte[0] ^= 1 << bit;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&byte)?;
    file.sync_all()?;
    Ok(())
}

/// Cuts the last `bytes` bytes off `path` (a torn write at a crash); returns the new length.
pub fn truncate_tail(path: &Path, bytes: u64) -> anyhow::Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let new_len = len.saturating_sub(bytes);
    file.set_len(new_len)?;
    file.sync_all()?;
    Ok(new_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts")
    }

    /// Polls the process state until `want` or 5 s pass (a signal is delivered asynchronously).
    fn wait_state(pid: u32, want: char) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if process_state(pid) == Some(want) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn stop_and_continue_a_process() {
        let mut child = sleeper();
        let pid = child.id();
        sigstop(pid).expect("SIGSTOP");
        assert!(wait_state(pid, 'T'), "stopped: {:?}", process_state(pid));
        sigcont(pid).expect("SIGCONT");
        assert!(wait_state(pid, 'S'), "running: {:?}", process_state(pid));
        let status = kill9(&mut child).expect("SIGKILL");
        assert!(!status.success());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        // Reaped: nothing left under /proc.
        assert_eq!(process_state(pid), None);
    }

    #[test]
    fn a_pause_ends_when_dropped() {
        let mut child = sleeper();
        let pid = child.id();
        {
            let _paused = Paused::new(pid).expect("SIGSTOP");
            assert!(wait_state(pid, 'T'));
        }
        assert!(wait_state(pid, 'S'));
        let paused = Paused::new(pid).expect("SIGSTOP");
        assert!(wait_state(pid, 'T'));
        paused.resume().expect("SIGCONT");
        assert!(wait_state(pid, 'S'));
        kill9(&mut child).expect("SIGKILL");
    }

    #[test]
    fn signalling_a_missing_process_fails_readably() {
        let mut child = sleeper();
        let pid = child.id();
        kill9(&mut child).expect("SIGKILL");
        let error = sigstop(pid).expect_err("no such process").to_string();
        assert!(error.contains(&format!("kill -STOP {pid}")), "{error}");
    }

    #[test]
    fn flip_a_bit_and_cut_a_tail() {
        let dir = crate::temp_dir();
        let path = dir.path().join("segment");
        std::fs::write(&path, [0u8, 0b1010, 0xff, 7]).expect("a file");
        flip_bit(&path, 1, 0).expect("flip");
        flip_bit(&path, 2, 7).expect("flip");
        assert_eq!(std::fs::read(&path).expect("read"), [0, 0b1011, 0x7f, 7]);
        assert!(flip_bit(&path, 9, 0).is_err());
        assert_eq!(truncate_tail(&path, 1).expect("truncate"), 3);
        assert_eq!(std::fs::read(&path).expect("read"), [0, 0b1011, 0x7f]);
        assert_eq!(truncate_tail(&path, 10).expect("truncate"), 0);
    }
}
