//! A private Xvfb server for tests, benchmarks and headless bots.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use crate::error::{MediaError, Result};

/// An `Xvfb` process on a free display number, killed when dropped.
///
/// Xvfb picks the display number itself and reports it on stdout once it accepts connections
/// (`-displayfd 1`), so no polling or sleeping is needed. It is also killed when the thread that
/// started it ends (`PR_SET_PDEATHSIG`): a process that leaves without running destructors
/// (`_exit`, an abort, a killed test) left its Xvfb running before, one per run (seen with
/// `ipc_bench`, which leaves with `_exit`). Keep it on the thread that started it.
#[derive(Debug)]
pub struct VirtualDisplay {
    child: Child,
    display: String,
}

impl VirtualDisplay {
    /// Starts `Xvfb -screen 0 {width}x{height}x24` (MIT-SHM and RandR are on by default).
    pub fn start(width: u32, height: u32) -> Result<Self> {
        let mut command = Command::new("Xvfb");
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                &format!("{width}x{height}x24"),
                "-nolisten",
                "tcp",
                // Without it the server resets when its last client disconnects, and a client
                // connecting during the reset is dropped.
                "-noreset",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| MediaError::Display(format!("cannot start Xvfb: {e}")))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(MediaError::Display("Xvfb stdout not captured".into()));
        };
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let number = line.trim();
        if read.is_err() || number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(MediaError::Display(format!(
                "Xvfb did not report a display number ({line:?})"
            )));
        }
        Ok(Self {
            display: format!(":{number}"),
            child,
        })
    }

    /// The display name (`":N"`).
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
