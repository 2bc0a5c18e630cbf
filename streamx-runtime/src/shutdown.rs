//! Waiting for SIGINT/SIGTERM.

use crate::error::{Error, Result};

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(Error::Signal)?;
        tracing::info!("Ctrl-C received; shutting down");
        Ok(())
    }
}
