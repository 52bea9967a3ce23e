//! The control socket: how a tool on this machine (`group-admin`) hands records it
//! signed to the node running for the same membership, so they take effect at once.
//!
//! A Unix socket in Linux's abstract namespace (no path length limit, nothing left
//! behind by a crash) under a random name that the node writes to `control.name` in
//! the membership directory, which only its owner can read: another local user can
//! neither guess the name to take it first nor find it. Anyone who learns it could
//! connect, so the node also asks the kernel who connected and serves only the user
//! who owns the membership directory, and the tool checks the node's uid the same way.
//! One request per connection, one JSON line each way:
//! `{"admit": ["<base64 record>", ...]}`, answered `{"results": [null | "why not", ...]}`
//! (in order) or `{"error": "..."}`.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener as StdListener, UnixStream as StdStream};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::Handle;
use crate::pki;

/// Largest request accepted, in bytes (a few hundred records).
pub const MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;
/// How long one request may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors handing records to a running node.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The socket failed.
    #[error("cannot talk to the running group-chat: {0}")]
    Io(#[from] io::Error),
    /// The node answered with an error.
    #[error("the running group-chat refused: {0}")]
    Refused(String),
    /// The answer was not understood.
    #[error("the running group-chat gave an answer this tool does not understand: {0}")]
    BadAnswer(String),
}

/// The file in a membership directory that names its node's control socket.
pub const NAME_FILE: &str = "control.name";

/// Binds a control socket under a fresh random name and writes the name to `dir`.
pub fn listen(dir: &Path) -> io::Result<UnixListener> {
    let mut random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| io::Error::other("no randomness"))?;
    let name = format!("peergroup-control-{}", pki::hex(&random));
    let std = StdListener::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
    std.set_nonblocking(true)?;
    crate::home::replace_file(&dir.join(NAME_FILE), name.as_bytes()).map_err(io::Error::other)?;
    UnixListener::from_std(std)
}

/// Serves requests until the node stops: only from the user who owns `dir`.
pub async fn serve(listener: UnixListener, owner: u32, handle: Handle) {
    loop {
        // The socket goes with the node, so a node started again in this process can
        // bind it.
        let accepted = tokio::select! {
            () = handle.stopped() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            match stream.peer_cred() {
                Ok(c) if c.uid() == owner => {}
                _ => return,
            }
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, one(stream, &handle)).await {
                tracing::info!("a control request timed out: {e}");
            }
        });
    }
}

/// The uid that owns `dir`: the only user the control socket serves.
pub fn owner(dir: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(dir)?.uid())
}

async fn one(stream: UnixStream, handle: &Handle) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
    let answer = match reader.read_line(&mut line).await {
        Ok(_) if line.ends_with('\n') => answer(&line, handle).await,
        Ok(_) => json!({"error": format!("the request must be one line of at most {MAX_REQUEST_BYTES} bytes")}),
        Err(e) => json!({"error": format!("cannot read the request: {e}")}),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
    let _ = write.shutdown().await;
}

async fn answer(line: &str, handle: &Handle) -> Value {
    let bodies: Option<Vec<Vec<u8>>> = serde_json::from_str::<Value>(line).ok().and_then(|v| {
        v.get("admit")?
            .as_array()?
            .iter()
            .map(|b| B64.decode(b.as_str()?).ok())
            .collect()
    });
    let Some(bodies) = bodies else {
        return json!({"error": "expected {\"admit\": [base64 records]}"});
    };
    match handle.admit(bodies).await {
        Ok(results) => json!({"results": results.into_iter().map(|r| r.err()).collect::<Vec<_>>()}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Hands `bodies` to the node running for the membership in `dir`: `None` when none
/// is running, else what became of each record, in order. Only a node of the user who
/// owns `dir` is trusted with them: anyone can bind an abstract name first.
pub fn hand_over(dir: &Path, bodies: &[Vec<u8>]) -> Result<Option<Vec<Result<(), String>>>, ControlError> {
    let name = match std::fs::read_to_string(dir.join(NAME_FILE)) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A name left by a node that stopped names nothing now.
    let std = match StdStream::connect_addr(&SocketAddr::from_abstract_name(name.trim())?) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    std.set_nonblocking(true)?;
    let owner = owner(dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let line = runtime.block_on(async {
        let stream = UnixStream::from_std(std)?;
        if stream.peer_cred()?.uid() != owner {
            return Err(ControlError::Refused(
                "its socket belongs to another user: not handing it anything".into(),
            ));
        }
        let request = json!({"admit": bodies.iter().map(|b| B64.encode(b)).collect::<Vec<_>>()});
        let exchange = async {
            let (read, mut write) = stream.into_split();
            write.write_all(format!("{request}\n").as_bytes()).await?;
            let mut line = String::new();
            tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES))
                .read_line(&mut line)
                .await?;
            Ok::<String, io::Error>(line)
        };
        tokio::time::timeout(REQUEST_TIMEOUT * 3, exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in 30 s"))?
            .map_err(ControlError::from)
    })?;
    let v: Value = serde_json::from_str(&line).map_err(|_| ControlError::BadAnswer(line.trim().to_string()))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(ControlError::Refused(e.to_string()));
    }
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .filter(|r| r.len() == bodies.len())
        .ok_or_else(|| ControlError::BadAnswer(line.trim().to_string()))?;
    Ok(Some(
        results
            .iter()
            .map(|r| match r.as_str() {
                Some(why) => Err(why.to_string()),
                None => Ok(()),
            })
            .collect(),
    ))
}
