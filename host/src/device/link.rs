//! The host end of a serial line to a board: bytes out, bytes in with a
//! timeout. A reader thread turns any blocking `Read` (QEMU's stdout pipe,
//! a serial port) into a channel the session can wait on with a deadline.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A byte stream to a device.
pub struct HostLink {
    tx: Box<dyn Write + Send>,
    rx: Receiver<std::io::Result<Vec<u8>>>,
    pending: std::collections::VecDeque<u8>,
    closed: bool,
    /// Where the line goes, for messages ("QEMU mps2-an385", "/dev/ttyACM0").
    pub name: String,
}

impl std::fmt::Debug for HostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLink").field("name", &self.name).finish()
    }
}

impl HostLink {
    pub fn new(name: String, reader: Box<dyn Read + Send>, writer: Box<dyn Write + Send>) -> HostLink {
        let (send, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = vec![0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if send.send(Ok(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => {
                        let _ = send.send(Err(e));
                        break;
                    }
                }
            }
        });
        HostLink { tx: writer, rx, pending: Default::default(), closed: false, name }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.tx.write_all(bytes).and_then(|()| self.tx.flush()).with_context(|| format!("{}: write failed", self.name))
    }

    /// The next byte, waiting until `deadline`; `None` when it passed.
    pub fn read_byte(&mut self, deadline: Instant) -> Result<Option<u8>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(Some(b));
            }
            if self.closed {
                bail!("{}: the line closed (the device stopped or was reset)", self.name);
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait == Duration::ZERO {
                return Ok(None);
            }
            match self.rx.recv_timeout(wait) {
                Ok(Ok(chunk)) => self.pending.extend(chunk),
                Ok(Err(e)) => return Err(e).with_context(|| format!("{}: read failed", self.name)),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }
}

/// Opens a serial port (a board's USB serial or a USB-UART adapter) as a line.
pub fn open_port(port: &str, baud: u32) -> Result<HostLink> {
    let p = serialport::new(port, baud).timeout(Duration::from_millis(100)).open().with_context(|| {
        format!("{port}: cannot open the serial port (is the board plugged in? permissions: the dialout group)")
    })?;
    let reader = p.try_clone().with_context(|| format!("{port}: cannot share the serial port"))?;
    Ok(HostLink::new(port.to_owned(), Box::new(reader), Box::new(p)))
}
