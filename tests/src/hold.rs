//! A TCP proxy that can hold back chosen requests: what a slow or stalled
//! store looks like to one service while the others reach the real one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection to `upstream`; while held, a request that
/// contains `needle` (e.g. the text of one kind of INSERT) stops after it
/// until the hold ends, and so does the rest of that connection.
#[derive(Debug)]
pub struct HoldingProxy {
    pub port: u16,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldingProxy {
    /// Listens on a free local port.
    pub async fn start(upstream: &str, needle: &'static [u8]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (hold, held) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let upstream = upstream.to_owned();
        let task = tokio::spawn({
            let (hold, held) = (hold.clone(), held.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (upstream, hold, held) = (upstream.clone(), hold.clone(), held.clone());
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&upstream).await {
                            pipe(client, server, needle, hold, held).await;
                        }
                    });
                }
            }
        });
        Ok(Self {
            port,
            hold,
            held,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts or stops holding.
    pub fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }

    /// How many times bytes with the needle were held back so far.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    needle: &'static [u8],
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
) {
    let (mut from_client, mut to_server) = (client, server);
    let (mut server_read, mut server_write) = to_server.split();
    let (mut client_read, mut client_write) = from_client.split();
    let up = async {
        let mut buf = vec![0_u8; 64 * 1024];
        // The end of the previous read: a needle split across two reads.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut seen = std::mem::take(&mut tail);
            let carried = seen.len();
            seen.extend_from_slice(&buf[..n]);
            // Up to the needle's end goes on at once: the server is then in
            // the middle of a request and waits for its rest (holding the
            // request's first byte would leave a kept-alive connection idle,
            // which the server closes after a few seconds).
            let mut split = 0;
            if hold.load(Ordering::SeqCst) {
                if let Some(at) = seen.windows(needle.len()).position(|w| w == needle) {
                    split = (at + needle.len()).saturating_sub(carried).min(n);
                    if server_write.write_all(&buf[..split]).await.is_err() {
                        break;
                    }
                    held.fetch_add(1, Ordering::SeqCst);
                    while hold.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            tail = seen[seen.len().saturating_sub(needle.len())..].to_vec();
            if server_write.write_all(&buf[split..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
