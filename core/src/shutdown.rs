//! Shutdown signal: one token that SIGINT / SIGTERM (or a test) trips, and
//! every task can wait on.

use tokio::sync::watch;

/// Cloneable shutdown token.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
    /// A child token also stops when its parent does.
    parent: Option<Box<Shutdown>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: std::sync::Arc::new(tx),
            rx,
            parent: None,
        }
    }

    /// A token that stops with this one, and can also be stopped alone
    /// (one task's "give up", under the service's shutdown).
    pub fn child(&self) -> Self {
        Self {
            parent: Some(Box::new(self.clone())),
            ..Self::new()
        }
    }

    /// Asks everything holding this token to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow() || self.parent.as_ref().is_some_and(|p| p.is_triggered())
    }

    /// Resolves once [`Shutdown::trigger`] has been called (on this token
    /// or on a parent).
    pub async fn wait(&self) {
        if self.parent.is_none() {
            // The service's own token (waited on for every message consumed): no boxing.
            let mut rx = self.rx.clone();
            // An error means every sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
            return;
        }
        type Wait = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
        let mut waits: Vec<Wait> = Vec::new();
        let mut token = Some(self);
        while let Some(t) = token {
            let mut rx = t.rx.clone();
            // An error means every sender is gone, which also means stop.
            waits.push(Box::pin(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }));
            token = t.parent.as_deref();
        }
        std::future::poll_fn(|cx| {
            if waits.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Trips this token on SIGINT or SIGTERM.
    pub fn on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot listen for SIGTERM");
                            let _ = ctrl_c.await;
                            this.trigger();
                            return;
                        }
                    };
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutdown signal received");
            this.trigger();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_waiters() {
        let s = Shutdown::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        assert!(!s.is_triggered());
        s.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .expect("task ok");
        assert!(s.is_triggered());
    }

    #[tokio::test]
    async fn a_child_stops_with_its_parent_and_alone() {
        let wait = |s: &Shutdown| {
            let s = s.clone();
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                async move { s.wait().await },
            )
        };
        let parent = Shutdown::new();
        let (a, b) = (parent.child(), parent.child());
        a.trigger();
        wait(&a).await.expect("a child stops alone");
        assert!(a.is_triggered() && !b.is_triggered() && !parent.is_triggered());
        let grandchild = b.child();
        parent.trigger();
        wait(&b).await.expect("with its parent");
        wait(&grandchild).await.expect("and its parent's parent");
        assert!(b.is_triggered() && grandchild.is_triggered());
    }
}
